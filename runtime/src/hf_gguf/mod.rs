//! A Hugging Face folder seen as the GGUF file llama.cpp's convert_hf_to_gguf.py would make of
//! it, without writing that file: GGUF tensor names and dims, llama's Q/K row permutation, norms
//! and biases in F32, Llama 3's `rope_freqs`, and the general/architecture/tokenizer metadata.
//! Weights stay in the memory-mapped safetensors in their stored dtype (F32/F16/BF16); only the
//! permuted and F32-converted tensors are materialized, one at a time, when asked for. Whole-model
//! quantization (`quant::gguf::quantize_source`) reads it like a GGUF file.

mod metadata;
mod vocab;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use quant::ggml::GgmlType;
use quant::gguf::{TensorDesc, TensorSource, Value};
use quant::hf::{Family, LlamaConfig, RopeScaling};

use crate::export::adjacent_row;
use crate::loader::safetensors_dir::{dense_ggml_type, SafetensorsDir, TensorEntry};
use crate::loader::LoadError;
use crate::model::LinearKind;

pub use metadata::size_label;
pub use vocab::pre_tokenizer_name;

/// How a GGUF tensor's bytes come from the folder.
enum Origin {
    /// A safetensors tensor as stored, rows reordered for llama's RoPE layout when `permute`
    /// gives the head count.
    Stored {
        hf_name: String,
        permute: Option<usize>,
    },
    /// A stored vector (norm or bias) converted to F32.
    Vector { hf_name: String },
    /// Computed at open (Llama 3's rope frequency factors), F32 bytes.
    Computed(Vec<u8>),
}

struct Mapped {
    desc: TensorDesc,
    origin: Origin,
}

pub struct HfGgufSource {
    dir: PathBuf,
    st: SafetensorsDir,
    pub config: LlamaConfig,
    metadata: Vec<(String, Value)>,
    tensors: Vec<Mapped>,
}

/// Choices the folder cannot make for itself.
#[derive(Clone, Debug, Default)]
pub struct HfGgufOptions {
    /// `general.name`; by default derived from the folder's (or Hub repository's) name.
    pub name: Option<String>,
}

/// The GGUF architecture name of a family: Mistral is "llama" to llama.cpp.
fn gguf_arch(family: Family) -> &'static str {
    match family {
        Family::Llama | Family::Mistral => "llama",
        Family::Qwen2 => "qwen2",
    }
}

/// The GGUF name of a Hugging Face tensor, None for buffers convert_hf_to_gguf skips, or an
/// error for a tensor it could not map.
fn gguf_name(dir: &Path, hf: &str) -> Result<Option<String>, LoadError> {
    if hf.ends_with(".rotary_emb.inv_freq")
        || hf.ends_with(".attention.masked_bias")
        || hf.ends_with(".attention.bias")
    {
        return Ok(None);
    }
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Ok(Some(n.to_owned()));
    }
    let unmapped = || LoadError::Tensor {
        path: dir.to_owned(),
        name: hf.to_owned(),
        msg: "no GGUF name for this tensor (not part of a supported Llama-family model)".into(),
    };
    let rest = hf.strip_prefix("model.layers.").ok_or_else(unmapped)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unmapped)?;
    let layer: usize = layer.parse().map_err(|_| unmapped())?;
    let (module, suffix) = rest.rsplit_once('.').ok_or_else(unmapped)?;
    if suffix != "weight" && suffix != "bias" {
        return Err(unmapped());
    }
    let stem = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        m => LinearKind::ALL
            .iter()
            .find(|k| k.hf_name() == m)
            .map(|k| k.gguf_name())
            .ok_or_else(unmapped)?,
    };
    Ok(Some(format!("blk.{layer}.{stem}.{suffix}")))
}

impl HfGgufSource {
    /// Opens the folder `dir` (config.json, safetensors, tokenizer files).
    pub fn open(dir: &Path, opts: &HfGgufOptions) -> Result<HfGgufSource, LoadError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| LoadError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| quant::hf::ConfigError::Json {
                path: cfg_path.clone(),
                source,
            })?;
        if let Some(q) = raw.get("quantization_config") {
            let method = q.get("quant_method").and_then(|m| m.as_str());
            return Err(LoadError::Unsupported {
                path: cfg_path,
                field: "quantization_config.quant_method".into(),
                msg: format!(
                    "{} checkpoints cannot be converted to GGUF; start from the full-precision model",
                    method.unwrap_or("quantized")
                ),
            });
        }
        let config = LlamaConfig::from_json(&cfg_path, &raw)?;
        let st = SafetensorsDir::open(dir)?;
        let arch = gguf_arch(config.family);
        if arch == "qwen2" && config.rope_scaling.is_some() {
            return Err(LoadError::Unsupported {
                path: cfg_path,
                field: "rope_scaling".into(),
                msg: "RoPE scaling on a qwen2 model is not supported by this converter".into(),
            });
        }

        let mut names: Vec<&String> = st.names().collect();
        names.sort();
        let mut tensors = Vec::with_capacity(names.len() + 1);
        if let Some(factors) = llama3_rope_factors(&config) {
            let desc = TensorDesc::new(
                "rope_freqs.weight",
                vec![factors.len() as u64],
                GgmlType::F32,
            );
            let bytes = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
            tensors.push(Mapped {
                desc,
                origin: Origin::Computed(bytes),
            });
        }
        for hf in names {
            let Some(name) = gguf_name(dir, hf)? else {
                continue;
            };
            let e = st.entry(hf)?;
            let stored = dense_ggml_type(e.dtype).ok_or_else(|| LoadError::Tensor {
                path: st.file_path(e).to_owned(),
                name: hf.clone(),
                msg: format!(
                    "dtype {:?}: only F32, F16 and BF16 tensors convert",
                    e.dtype
                ),
            })?;
            let dims: Vec<u64> = e.shape.iter().rev().map(|&d| d as u64).collect();
            if dims.is_empty() || dims.len() > 2 || dims.contains(&0) {
                return Err(LoadError::Tensor {
                    path: st.file_path(e).to_owned(),
                    name: hf.clone(),
                    msg: format!("shape {:?}: expected a vector or a matrix", e.shape),
                });
            }
            // convert_hf_to_gguf keeps vectors, norms and anything not a weight in F32
            let as_f32 =
                dims.len() == 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight");
            let permute = permuted_heads(&config, &name);
            if let Some(heads) = permute {
                check_permutable(&st, e, hf, heads, config.head_dim)?;
            }
            let (ty, origin) = if as_f32 {
                let origin = match permute {
                    // q/k biases: permuted like the rows they add to, then F32
                    Some(_) => Origin::Stored {
                        hf_name: hf.clone(),
                        permute,
                    },
                    None => Origin::Vector {
                        hf_name: hf.clone(),
                    },
                };
                (GgmlType::F32, origin)
            } else {
                let origin = Origin::Stored {
                    hf_name: hf.clone(),
                    permute,
                };
                (stored, origin)
            };
            tensors.push(Mapped {
                desc: TensorDesc::new(name, dims, ty),
                origin,
            });
        }
        let tokenizer = vocab::tokenizer_metadata(dir, &raw, &config)?;
        let n_params: u64 = tensors
            .iter()
            .map(|t| t.desc.dims.iter().product::<u64>())
            .sum();
        let metadata = metadata::model_metadata(dir, &raw, &config, opts, n_params, tokenizer);
        Ok(HfGgufSource {
            dir: dir.to_owned(),
            st,
            config,
            metadata,
            tensors,
        })
    }

    /// The stored tensor's bytes with rows in GGUF order and, for `to_f32`, converted to F32.
    fn stored(&self, hf_name: &str, permute: Option<usize>, to_f32: bool) -> Cow<'_, [u8]> {
        let e = self
            .st
            .get(hf_name)
            .expect("every mapped tensor was found at open");
        let bytes = self.st.slice(e);
        let from = dense_ggml_type(e.dtype).expect("dtype checked at open");
        let Some(heads) = permute else {
            return if to_f32 {
                Cow::Owned(to_f32_bytes(from, bytes))
            } else {
                Cow::Borrowed(bytes)
            };
        };
        let rows = e.shape[0];
        let row_bytes = bytes.len() / rows;
        let head_dim = rows / heads;
        let mut out = vec![0u8; bytes.len()];
        for (r, src) in bytes.chunks_exact(row_bytes).enumerate() {
            let dst = adjacent_row(r, head_dim);
            out[dst * row_bytes..(dst + 1) * row_bytes].copy_from_slice(src);
        }
        if to_f32 {
            out = to_f32_bytes(from, &out);
        }
        Cow::Owned(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn to_f32_bytes(from: GgmlType, bytes: &[u8]) -> Vec<u8> {
    let n = bytes.len() / from.type_size();
    let mut v = vec![0f32; n];
    quant::ggml::dequantize_row(from, bytes, &mut v).expect("dense dtypes decode any length");
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The head count whose rows convert_hf_to_gguf permutes in tensor `name` (llama's q and k
/// weights and biases), or None.
fn permuted_heads(config: &LlamaConfig, name: &str) -> Option<usize> {
    if gguf_arch(config.family) != "llama" {
        return None;
    }
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    if stem.ends_with(".attn_q") {
        Some(config.num_attention_heads)
    } else if stem.ends_with(".attn_k") {
        Some(config.num_key_value_heads)
    } else {
        None
    }
}

fn check_permutable(
    st: &SafetensorsDir,
    e: &TensorEntry,
    hf: &str,
    heads: usize,
    head_dim: usize,
) -> Result<(), LoadError> {
    if e.shape[0] != heads * head_dim {
        return Err(LoadError::Tensor {
            path: st.file_path(e).to_owned(),
            name: hf.to_owned(),
            msg: format!(
                "{} rows, but {heads} heads of {head_dim} need {}: cannot reorder them for llama's RoPE",
                e.shape[0],
                heads * head_dim
            ),
        });
    }
    Ok(())
}

/// Llama 3's per-pair frequency divisors (`rope_freqs.weight`), which llama.cpp applies in
/// place of the scaling rule.
fn llama3_rope_factors(config: &LlamaConfig) -> Option<Vec<f32>> {
    let Some(RopeScaling::Llama3(s)) = config.rope_scaling else {
        return None;
    };
    let d = config.head_dim;
    let old_ctx = s.original_max_position_embeddings as f64;
    let (low_wavelen, high_wavelen) = (old_ctx / s.low_freq_factor, old_ctx / s.high_freq_factor);
    let factors = (0..d / 2)
        .map(|i| {
            let freq = 1.0 / config.rope_theta.powf(2.0 * i as f64 / d as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                s.factor
            } else {
                let smooth = (old_ctx / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            };
            f as f32
        })
        .collect();
    Some(factors)
}

impl TensorSource for HfGgufSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    fn tensors(&self) -> Vec<TensorDesc> {
        self.tensors.iter().map(|t| t.desc.clone()).collect()
    }

    fn tensor_data(&self, index: usize) -> Cow<'_, [u8]> {
        let t = &self.tensors[index];
        let to_f32 = t.desc.ty == GgmlType::F32;
        match &t.origin {
            Origin::Stored { hf_name, permute } => self.stored(hf_name, *permute, to_f32),
            Origin::Vector { hf_name } => self.stored(hf_name, None, true),
            Origin::Computed(bytes) => Cow::Borrowed(bytes),
        }
    }

    fn release(&self, index: usize) {
        if let Origin::Stored { hf_name, .. } | Origin::Vector { hf_name } =
            &self.tensors[index].origin
        {
            if let Some(e) = self.st.get(hf_name) {
                self.st.release(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_convert_hf_to_gguf() {
        let d = Path::new("m");
        let n = |s: &str| gguf_name(d, s).unwrap();
        assert_eq!(n("model.embed_tokens.weight").unwrap(), "token_embd.weight");
        assert_eq!(n("lm_head.weight").unwrap(), "output.weight");
        assert_eq!(
            n("model.layers.12.self_attn.o_proj.weight").unwrap(),
            "blk.12.attn_output.weight"
        );
        assert_eq!(
            n("model.layers.0.self_attn.k_proj.bias").unwrap(),
            "blk.0.attn_k.bias"
        );
        assert_eq!(
            n("model.layers.3.post_attention_layernorm.weight").unwrap(),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(n("model.layers.3.self_attn.rotary_emb.inv_freq"), None);
        let e = gguf_name(d, "model.layers.0.mlp.experts.0.w1.weight")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mlp.experts.0.w1.weight") && e.contains("no GGUF name"),
            "{e}"
        );
    }
}
