//! Hugging Face `config.json` for the Llama family (Llama 2/3.x, Mistral, Qwen2/2.5, SmolLM):
//! parsed with errors that name the file and the field, and written back for the artifacts.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: field {field}: {msg}")]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: unsupported architecture {arch} (supported: {supported})")]
    Unsupported {
        path: PathBuf,
        arch: String,
        supported: String,
    },
}

/// The Llama-family variants the runtime runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
}

impl Family {
    pub const SUPPORTED: &'static str =
        "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (model_type llama, mistral, qwen2)";

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
        }
    }

    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    pub fn from_model_type(t: &str) -> Option<Family> {
        match t {
            "llama" => Some(Family::Llama),
            "mistral" => Some(Family::Mistral),
            "qwen2" => Some(Family::Qwen2),
            _ => None,
        }
    }
}

/// Llama 3's frequency-dependent RoPE scaling ("rope_type": "llama3").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    Llama3(Llama3Scaling),
    /// Position interpolation: positions divided by `factor`.
    Linear(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The dtype the checkpoint declares ("bfloat16", "float16", "float32").
    pub torch_dtype: Option<String>,
}

struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            path: self.path.to_owned(),
            field: field.to_owned(),
            msg: msg.into(),
        }
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>, ConfigError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(field, format!("expected a positive integer, found {v}"))),
        }
    }

    fn usize(&self, field: &str) -> Result<usize, ConfigError> {
        self.opt_usize(field)?
            .ok_or_else(|| self.err(field, "missing (required for this architecture)"))
    }

    fn opt_f64(&self, obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, ConfigError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>, ConfigError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    fn token_ids(&self, field: &str) -> Result<Vec<u32>, ConfigError> {
        let bad = || self.err(field, "expected a token id or a list of token ids");
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|n| n as u32).ok_or_else(bad))
                .collect(),
            Some(v) => Ok(vec![v.as_u64().ok_or_else(bad)? as u32]),
        }
    }
}

impl LlamaConfig {
    pub fn load(path: impl AsRef<Path>) -> Result<LlamaConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(path, &v)
    }

    /// Parses `v`; `path` only names the source in errors.
    pub fn from_json(path: &Path, v: &Value) -> Result<LlamaConfig, ConfigError> {
        let obj = v.as_object().ok_or_else(|| ConfigError::Field {
            path: path.to_owned(),
            field: "(top level)".into(),
            msg: "expected a JSON object".into(),
        })?;
        let f = Fields { path, obj };
        let model_type = match obj.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(f.err("model_type", format!("expected a string, found {v}"))),
            None => return Err(f.err("model_type", "missing")),
        };
        let family =
            Family::from_model_type(&model_type).ok_or_else(|| ConfigError::Unsupported {
                path: path.to_owned(),
                arch: obj
                    .get("architectures")
                    .and_then(|a| a.get(0))
                    .and_then(Value::as_str)
                    .map(|a| format!("{a} (model_type {model_type})"))
                    .unwrap_or(model_type.clone()),
                supported: Family::SUPPORTED.into(),
            })?;

        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(h) => h,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(f.err(
                    "head_dim",
                    format!("missing, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.err("head_dim", format!("{head_dim} is odd; RoPE needs pairs")));
        }

        // transformers v5 moved rope_theta and rope_scaling into rope_parameters.
        let rope_obj = match obj.get("rope_parameters") {
            Some(Value::Object(p)) => Some(p),
            _ => None,
        };
        let rope_theta = match rope_obj {
            Some(p) => f.opt_f64(p, "rope_theta")?,
            None => None,
        }
        .or(f.opt_f64(obj, "rope_theta")?)
        .unwrap_or(10000.0);
        let scaling_obj = match (obj.get("rope_scaling"), rope_obj) {
            (Some(Value::Object(s)), _) => Some(s),
            (_, Some(p)) if p.contains_key("rope_type") => Some(p),
            _ => None,
        };
        let rope_scaling = match scaling_obj {
            None => None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let num = |k: &str| -> Result<f64, ConfigError> {
                    f.opt_f64(s, k)?
                        .ok_or_else(|| f.err(&format!("rope_scaling.{k}"), "missing"))
                };
                match kind {
                    "default" => None,
                    "linear" => Some(RopeScaling::Linear(num("factor")?)),
                    "llama3" => Some(RopeScaling::Llama3(Llama3Scaling {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?
                            as u64,
                    })),
                    other => {
                        return Err(f.err(
                            "rope_scaling.rope_type",
                            format!(
                                "{other:?} is not supported (supported: default, linear, llama3)"
                            ),
                        ))
                    }
                }
            }
        };

        let qkv_bias = match family {
            Family::Qwen2 => true,
            _ => f.opt_bool("attention_bias")?.unwrap_or(false),
        };
        if f.opt_bool("mlp_bias")? == Some(true) {
            return Err(f.err("mlp_bias", "MLP biases are not supported"));
        }
        let torch_dtype = obj
            .get("torch_dtype")
            .or_else(|| obj.get("dtype"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        Ok(LlamaConfig {
            family,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.opt_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            vocab_size: f.usize("vocab_size")?,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
            torch_dtype,
        })
    }

    /// The config.json transformers expects for this model, in `dtype`.
    pub fn to_json(&self, dtype: &str) -> Value {
        let mut v = json!({
            "architectures": [self.family.architecture()],
            "model_type": self.family.model_type(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.qkv_bias,
            "mlp_bias": false,
            "torch_dtype": dtype,
            "use_cache": true,
        });
        let o = v.as_object_mut().unwrap();
        if self.family == Family::Qwen2 {
            o.remove("attention_bias");
        }
        match self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear(factor)) => {
                o.insert(
                    "rope_scaling".into(),
                    json!({"rope_type": "linear", "factor": factor}),
                );
            }
            Some(RopeScaling::Llama3(s)) => {
                o.insert(
                    "rope_scaling".into(),
                    json!({
                        "rope_type": "llama3",
                        "factor": s.factor,
                        "low_freq_factor": s.low_freq_factor,
                        "high_freq_factor": s.high_freq_factor,
                        "original_max_position_embeddings": s.original_max_position_embeddings,
                    }),
                );
            }
        }
        if let Some(b) = self.bos_token_id {
            o.insert("bos_token_id".into(), json!(b));
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [e] => {
                o.insert("eos_token_id".into(), json!(e));
            }
            many => {
                o.insert("eos_token_id".into(), json!(many));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0, "max_position_embeddings": 8192, "vocab_size": 49152,
            "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
        })
    }

    #[test]
    fn parses_and_round_trips() {
        let c = LlamaConfig::from_json(Path::new("config.json"), &smollm()).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.num_key_value_heads, 3);
        assert!(c.tie_word_embeddings && !c.qkv_bias);
        let back = LlamaConfig::from_json(Path::new("x"), &c.to_json("bfloat16")).unwrap();
        assert_eq!(
            back,
            LlamaConfig {
                torch_dtype: Some("bfloat16".into()),
                ..c
            }
        );
    }

    #[test]
    fn llama3_scaling_and_v5_rope_parameters() {
        let mut v = smollm();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = LlamaConfig::from_json(Path::new("c"), &v).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3(s)) if s.factor == 8.0));
    }

    #[test]
    fn qwen2_has_qkv_bias() {
        let mut v = smollm();
        v["model_type"] = json!("qwen2");
        assert!(LlamaConfig::from_json(Path::new("c"), &v).unwrap().qkv_bias);
    }

    #[test]
    fn errors_name_file_and_field() {
        let mut v = smollm();
        v.as_object_mut().unwrap().remove("intermediate_size");
        let e = LlamaConfig::from_json(Path::new("m/config.json"), &v)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m/config.json") && e.contains("intermediate_size") && e.contains("missing"),
            "{e}"
        );

        let mut v = smollm();
        v["model_type"] = json!("gpt_neox");
        v["architectures"] = json!(["GPTNeoXForCausalLM"]);
        let e = LlamaConfig::from_json(Path::new("c.json"), &v)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported architecture GPTNeoXForCausalLM"),
            "{e}"
        );

        let mut v = smollm();
        v["hidden_size"] = json!("576");
        let e = LlamaConfig::from_json(Path::new("c.json"), &v)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hidden_size") && e.contains("positive integer"),
            "{e}"
        );
    }
}
