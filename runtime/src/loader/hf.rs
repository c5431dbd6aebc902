//! Hugging Face model folders: config.json + safetensors (+ tokenizer files). Dense linears are
//! used in place from the memory map; quantized formats are recognised from quantization_config.

use std::path::Path;
use std::sync::Arc;

use kernels::{GgmlMatrix, SharedMatrix};
use quant::hf::LlamaConfig;
use safetensors::Dtype;

use super::safetensors_dir::{dense_ggml_type, SafetensorsDir};
use super::LoadError;
use crate::model::{Layer, Linear, LinearKind, Model, Rope, RopeStyle};
use crate::tokenizer::Tokenizer;

/// How a folder stores its linear layers.
pub trait LinearFormat {
    /// Loads the linear whose module path is `prefix` (e.g. "model.layers.0.self_attn.q_proj")
    /// as a [rows × cols] matrix.
    fn load(
        &self,
        st: &SafetensorsDir,
        prefix: &str,
        rows: usize,
        cols: usize,
    ) -> Result<SharedMatrix, LoadError>;
}

/// Unquantized f32/f16/bf16 weights.
pub struct Dense;

impl LinearFormat for Dense {
    fn load(
        &self,
        st: &SafetensorsDir,
        prefix: &str,
        rows: usize,
        cols: usize,
    ) -> Result<SharedMatrix, LoadError> {
        dense_matrix(st, &format!("{prefix}.weight"), rows, cols)
    }
}

pub fn dense_matrix(
    st: &SafetensorsDir,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<SharedMatrix, LoadError> {
    let e = st.expect(name, &[Dtype::F32, Dtype::F16, Dtype::BF16], &[rows, cols])?;
    let ty = dense_ggml_type(e.dtype).expect("float dtype checked above");
    let m = GgmlMatrix::new(ty, st.bytes(e), rows, cols).map_err(|err| LoadError::Tensor {
        path: st.file_path(e).to_owned(),
        name: name.into(),
        msg: err.to_string(),
    })?;
    Ok(Arc::new(m))
}

/// The linear format a config.json's quantization_config selects.
fn linear_format(dir: &Path, cfg: &serde_json::Value) -> Result<Box<dyn LinearFormat>, LoadError> {
    let Some(q) = cfg.get("quantization_config") else {
        return Ok(Box::new(Dense));
    };
    let method = q
        .get("quant_method")
        .and_then(|m| m.as_str())
        .unwrap_or("(missing)");
    let config = dir.join("config.json");
    match method {
        "gptq" => return Ok(Box::new(super::gptq::Gptq::from_config(&config, q)?)),
        "awq" => return Ok(Box::new(super::awq::Awq::from_config(&config, q)?)),
        // Pack-quantized weights below 8 bits are the group-quantized int layout (GPTQ-like);
        // everything else compressed-tensors writes (int8, FP8, 8-bit packs) goes to its loader.
        "compressed-tensors" if packs_below_8_bits(q) => {
            if let Some(f) = super::pack_quantized::PackQuantized::from_config(&config, q)? {
                return Ok(Box::new(f));
            }
        }
        "compressed-tensors" => {
            let c = super::compressed_tensors::CompressedTensors::from_config(&config, q)?;
            return Ok(Box::new(c));
        }
        _ => {}
    }
    Err(LoadError::Unsupported {
        path: dir.join("config.json"),
        field: "quantization_config.quant_method".into(),
        msg: format!("{method:?} is not supported"),
    })
}

/// Whether a compressed-tensors quantization_config holds pack-quantized weights of fewer than 8
/// bits.
fn packs_below_8_bits(q: &serde_json::Value) -> bool {
    let format =
        |v: &serde_json::Value| v.get("format").and_then(|f| f.as_str()).map(str::to_owned);
    let Some(groups) = q.get("config_groups").and_then(|g| g.as_object()) else {
        return false;
    };
    groups.values().any(|g| {
        let bits = g["weights"].get("num_bits").and_then(|b| b.as_u64());
        format(g).or_else(|| format(q)).as_deref() == Some("pack-quantized")
            && bits.is_some_and(|b| b < 8)
    })
}

pub fn load(dir: &Path) -> Result<Model, LoadError> {
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
    let config = LlamaConfig::from_json(&cfg_path, &raw)?;
    let format = linear_format(dir, &raw)?;
    let st = SafetensorsDir::open(dir)?;
    let (d, ff, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim,
    );
    let (q_dim, kv_dim) = (
        config.num_attention_heads * hd,
        config.num_key_value_heads * hd,
    );

    let embed = dense_matrix(&st, "model.embed_tokens.weight", config.vocab_size, d)?;
    let output = if config.tie_word_embeddings || !st.contains("lm_head.weight") {
        embed.clone()
    } else {
        dense_matrix(&st, "lm_head.weight", config.vocab_size, d)?
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let lin = |kind: LinearKind, rows: usize, cols: usize| -> Result<Linear, LoadError> {
            let prefix = format!("{p}.{}", kind.hf_name());
            let bias_name = format!("{prefix}.bias");
            let bias = if st.contains(&bias_name) {
                Some(Arc::new(st.vector_f32(&bias_name, rows)?))
            } else {
                None
            };
            Ok(Linear {
                w: format.load(&st, &prefix, rows, cols)?,
                bias,
            })
        };
        layers.push(Layer {
            attn_norm: Arc::new(st.vector_f32(&format!("{p}.input_layernorm.weight"), d)?),
            q: lin(LinearKind::Q, q_dim, d)?,
            k: lin(LinearKind::K, kv_dim, d)?,
            v: lin(LinearKind::V, kv_dim, d)?,
            o: lin(LinearKind::O, d, q_dim)?,
            ffn_norm: Arc::new(st.vector_f32(&format!("{p}.post_attention_layernorm.weight"), d)?),
            gate: lin(LinearKind::Gate, ff, d)?,
            up: lin(LinearKind::Up, ff, d)?,
            down: lin(LinearKind::Down, d, ff)?,
        });
    }
    let tokenizer = if dir.join("tokenizer.json").exists() {
        Some(Tokenizer::from_hf_dir(dir)?)
    } else {
        None
    };
    Ok(Model {
        rope: Rope::new(&config, RopeStyle::Halves, None),
        output_norm: Arc::new(st.vector_f32("model.norm.weight", d)?),
        config,
        embed,
        layers,
        output,
        tokenizer,
        source: format!("{} (Hugging Face folder)", dir.display()),
    })
}
