//! GGUF models ("llama" and "qwen2" architectures): weights are used in place from the memory map.

use std::path::Path;
use std::sync::Arc;

use kernels::{GgmlMatrix, SharedMatrix};
use quant::gguf::{GgufFile, TensorInfo};
use quant::hf::{Family, LlamaConfig, RopeScaling};

use super::LoadError;
use crate::model::{Layer, Linear, LinearKind, Model, Rope, RopeStyle};
use crate::tokenizer::Tokenizer;

pub const SUPPORTED_ARCHS: &str = "llama, qwen2";

/// The model configuration a GGUF's metadata describes, and the RoPE layout of its weights.
pub fn config_from_gguf(g: &GgufFile) -> Result<(LlamaConfig, RopeStyle), LoadError> {
    let arch = g.req_str("general.architecture")?;
    let (family, style) = match arch {
        // convert_hf_to_gguf permutes llama Q/K rows for adjacent-pair RoPE; qwen2 keeps halves.
        "llama" => (Family::Llama, RopeStyle::Adjacent),
        "qwen2" => (Family::Qwen2, RopeStyle::Halves),
        other => {
            return Err(LoadError::Unsupported {
                path: g.path.clone(),
                field: "general.architecture".into(),
                msg: format!("unsupported architecture {other:?} (supported: {SUPPORTED_ARCHS})"),
            })
        }
    };
    let key = |s: &str| format!("{arch}.{s}");
    let int = |s: &str| -> Result<usize, LoadError> {
        let k = key(s);
        match g.req_int(&k)? {
            v if v > 0 => Ok(v as usize),
            v => Err(LoadError::Unsupported {
                path: g.path.clone(),
                field: k,
                msg: format!("{v} is not a positive size"),
            }),
        }
    };
    let hidden_size = int("embedding_length")?;
    let heads = int("attention.head_count")?;
    let kv_heads = g
        .opt_int(&key("attention.head_count_kv"))?
        .map(|v| v as usize)
        .unwrap_or(heads);
    let head_dim = g
        .opt_int(&key("attention.key_length"))?
        .map(|v| v as usize)
        .unwrap_or(hidden_size / heads);
    let bad = |field: String, msg: String| LoadError::Unsupported {
        path: g.path.clone(),
        field,
        msg,
    };
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(bad(
            key("attention.head_count_kv"),
            format!("{kv_heads} does not divide head_count {heads}"),
        ));
    }
    if let Some(rd) = g.opt_int(&key("rope.dimension_count"))? {
        if rd as usize != head_dim {
            return Err(bad(
                key("rope.dimension_count"),
                format!("partial rotary ({rd} of {head_dim}) is not supported"),
            ));
        }
    }
    let rope_scaling = match g.opt_str(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear(
            g.opt_float(&key("rope.scaling.factor"))?.unwrap_or(1.0),
        )),
        Some(other) => {
            return Err(bad(
                key("rope.scaling.type"),
                format!("{other:?} is not supported"),
            ))
        }
    };
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| LoadError::MissingTensor {
            path: g.path.clone(),
            name: "token_embd.weight".into(),
        })?;
    let vocab_size = match g.opt_int(&key("vocab_size"))? {
        Some(v) => v as usize,
        None => embd.dims.get(1).copied().unwrap_or(0) as usize,
    };
    let tok_id =
        |k: &str| -> Result<Option<u32>, LoadError> { Ok(g.opt_int(k)?.map(|v| v as u32)) };
    let config = LlamaConfig {
        family,
        hidden_size,
        intermediate_size: int("feed_forward_length")?,
        num_hidden_layers: int("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: g
            .opt_float(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| bad(key("attention.layer_norm_rms_epsilon"), "missing".into()))?,
        rope_theta: g.opt_float(&key("rope.freq_base"))?.unwrap_or(10000.0),
        rope_scaling,
        max_position_embeddings: g
            .opt_int(&key("context_length"))?
            .map(|v| v as usize)
            .unwrap_or(2048),
        vocab_size,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        bos_token_id: tok_id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: tok_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        torch_dtype: None,
    };
    Ok((config, style))
}

struct Tensors<'a> {
    g: &'a GgufFile,
}

impl Tensors<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, LoadError> {
        self.g.tensor(name).ok_or_else(|| LoadError::MissingTensor {
            path: self.g.path.clone(),
            name: name.into(),
        })
    }

    fn check_shape(&self, t: &TensorInfo, want: &[usize]) -> Result<(), LoadError> {
        let got: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
        if got != want {
            return Err(LoadError::Shape {
                path: self.g.path.clone(),
                name: t.name.clone(),
                want: want.to_vec(),
                got,
            });
        }
        Ok(())
    }

    /// A [rows × cols] matrix (GGUF dims [cols, rows]).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<SharedMatrix, LoadError> {
        let t = self.info(name)?;
        self.check_shape(t, &[cols, rows])?;
        let m = GgmlMatrix::new(t.ty, self.g.tensor_shared(t), rows, cols).map_err(|e| {
            LoadError::Tensor {
                path: self.g.path.clone(),
                name: name.into(),
                msg: e.to_string(),
            }
        })?;
        Ok(Arc::new(m))
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, LoadError> {
        let t = self.info(name)?;
        self.check_shape(t, &[n])?;
        let mut v = vec![0f32; n];
        quant::ggml::dequantize_row(t.ty, self.g.tensor_data(t), &mut v).map_err(|e| {
            LoadError::Tensor {
                path: self.g.path.clone(),
                name: name.into(),
                msg: e.to_string(),
            }
        })?;
        Ok(v)
    }

    fn optional_vector(&self, name: &str, n: usize) -> Result<Option<Arc<Vec<f32>>>, LoadError> {
        match self.g.tensor(name) {
            None => Ok(None),
            Some(_) => Ok(Some(Arc::new(self.vector(name, n)?))),
        }
    }
}

pub fn load(path: &Path) -> Result<Model, LoadError> {
    let g = GgufFile::open(path)?;
    let (config, style) = config_from_gguf(&g)?;
    let t = Tensors { g: &g };
    let (d, ff, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim,
    );
    let (q_dim, kv_dim) = (
        config.num_attention_heads * hd,
        config.num_key_value_heads * hd,
    );

    let embed = t.matrix("token_embd.weight", config.vocab_size, d)?;
    let output = if config.tie_word_embeddings {
        embed.clone()
    } else {
        t.matrix("output.weight", config.vocab_size, d)?
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let lin = |kind: LinearKind, rows: usize, cols: usize| -> Result<Linear, LoadError> {
            let stem = format!("blk.{i}.{}", kind.gguf_name());
            Ok(Linear {
                w: t.matrix(&format!("{stem}.weight"), rows, cols)?,
                bias: t.optional_vector(&format!("{stem}.bias"), rows)?,
            })
        };
        layers.push(Layer {
            attn_norm: Arc::new(t.vector(&format!("blk.{i}.attn_norm.weight"), d)?),
            q: lin(LinearKind::Q, q_dim, d)?,
            k: lin(LinearKind::K, kv_dim, d)?,
            v: lin(LinearKind::V, kv_dim, d)?,
            o: lin(LinearKind::O, d, q_dim)?,
            ffn_norm: Arc::new(t.vector(&format!("blk.{i}.ffn_norm.weight"), d)?),
            gate: lin(LinearKind::Gate, ff, d)?,
            up: lin(LinearKind::Up, ff, d)?,
            down: lin(LinearKind::Down, d, ff)?,
        });
    }
    let freq_factors = match g.tensor("rope_freqs.weight") {
        Some(_) => Some(t.vector("rope_freqs.weight", hd / 2)?),
        None => None,
    };
    let tokenizer = match g.get("tokenizer.ggml.model") {
        Some(_) => Some(Tokenizer::from_gguf(&g)?),
        None => None,
    };
    Ok(Model {
        rope: Rope::new(&config, style, freq_factors.as_deref()),
        output_norm: Arc::new(t.vector("output_norm.weight", d)?),
        config,
        embed,
        layers,
        output,
        tokenizer,
        source: format!("{} (GGUF)", path.display()),
    })
}
