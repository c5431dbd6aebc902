//! Writes any loaded model as a dense Hugging Face folder (bf16/f16/f32 safetensors, config.json,
//! tokenizer files), one tensor at a time, atomically. From a llama-layout GGUF this undoes
//! llama.cpp's Q/K row permutation, giving the rotate-half layout transformers expects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use kernels::SharedMatrix;
use quant::atomic::AtomicOutput;
use quant::safetensors_out::{Dtype, ShardedWriter, TensorSpec};

use crate::model::{LinearKind, Model, RopeStyle};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseDtype {
    BF16,
    F16,
    F32,
}

impl DenseDtype {
    fn safetensors(self) -> Dtype {
        match self {
            DenseDtype::BF16 => Dtype::BF16,
            DenseDtype::F16 => Dtype::F16,
            DenseDtype::F32 => Dtype::F32,
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            DenseDtype::BF16 => "bfloat16",
            DenseDtype::F16 => "float16",
            DenseDtype::F32 => "float32",
        }
    }

    fn encode(self, v: &[f32], out: &mut Vec<u8>) {
        out.clear();
        match self {
            DenseDtype::BF16 => out.extend(v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes())),
            DenseDtype::F16 => out.extend(v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes())),
            DenseDtype::F32 => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        }
    }
}

/// What to write for each tensor: a matrix (optionally with rows un-permuted per head) or a vector.
enum Source<'a> {
    Matrix(&'a SharedMatrix, Option<usize>),
    Vector(&'a [f32]),
}

/// Maps row `r` of a rotate-half matrix to the row holding it in the adjacent-pair layout.
fn adjacent_row(r: usize, head_dim: usize) -> usize {
    let (head, j) = (r / head_dim, r % head_dim);
    let half = head_dim / 2;
    head * head_dim + if j < half { 2 * j } else { 2 * (j - half) + 1 }
}

/// Writes `model` (loaded from `source`) to `out` as a Hugging Face folder, in safetensors shards
/// of at most `max_shard_bytes`.
pub fn write_hf_folder(
    model: &Model,
    source: &Path,
    out: &Path,
    dtype: DenseDtype,
    max_shard_bytes: usize,
) -> Result<PathBuf, ExportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    let cfg = &model.config;
    let tied = std::sync::Arc::ptr_eq(&model.embed, &model.output);
    let permuted = model.rope.style == RopeStyle::Adjacent;
    let hd = cfg.head_dim;

    let mut items: Vec<(String, Source)> = vec![(
        "model.embed_tokens.weight".into(),
        Source::Matrix(&model.embed, None),
    )];
    for (i, l) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        items.push((
            format!("{p}.input_layernorm.weight"),
            Source::Vector(&l.attn_norm),
        ));
        for kind in LinearKind::ALL {
            let lin = l.linear(kind);
            let unpermute =
                (permuted && matches!(kind, LinearKind::Q | LinearKind::K)).then_some(hd);
            items.push((
                format!("{p}.{}.weight", kind.hf_name()),
                Source::Matrix(&lin.w, unpermute),
            ));
            if let Some(b) = &lin.bias {
                if unpermute.is_some() {
                    return Err(ExportError::Unsupported(
                        "q/k biases in a permuted (llama-layout) model are not supported".into(),
                    ));
                }
                items.push((format!("{p}.{}.bias", kind.hf_name()), Source::Vector(b)));
            }
        }
        items.push((
            format!("{p}.post_attention_layernorm.weight"),
            Source::Vector(&l.ffn_norm),
        ));
    }
    items.push((
        "model.norm.weight".into(),
        Source::Vector(&model.output_norm),
    ));
    if !tied {
        items.push(("lm_head.weight".into(), Source::Matrix(&model.output, None)));
    }

    let specs = items
        .iter()
        .map(|(name, s)| {
            let shape = match s {
                Source::Matrix(m, _) => vec![m.rows(), m.cols()],
                Source::Vector(v) => vec![v.len()],
            };
            TensorSpec::new(name.clone(), dtype.safetensors(), shape)
        })
        .collect();

    let dir = AtomicOutput::dir(out).map_err(io(out))?;
    let st_path = dir.path().to_owned();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut w =
        ShardedWriter::create(&st_path, specs, max_shard_bytes, meta).map_err(io(&st_path))?;
    let (mut row, mut bytes, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for (name, s) in &items {
        match s {
            Source::Vector(v) => dtype.encode(v, &mut all),
            Source::Matrix(m, unpermute) => {
                all.clear();
                row.resize(m.cols(), 0.0);
                for r in 0..m.rows() {
                    let src = unpermute.map_or(r, |hd| adjacent_row(r, hd));
                    m.dequantize_row(src, &mut row);
                    dtype.encode(&row, &mut bytes);
                    all.extend_from_slice(&bytes);
                }
            }
        }
        w.write(name, &all).map_err(io(&st_path))?;
    }
    w.finish().map_err(io(&st_path))?;

    write_json(
        &dir.path().join("config.json"),
        &base_config_json(model, dtype.torch_name()),
    )?;
    write_tokenizer_files(model, Some(source), dir.path())?;
    dir.commit().map_err(io(out))
}

/// config.json for `model` as a dense folder in `torch_dtype`; quantized artifacts add their
/// `quantization_config` to it.
pub fn base_config_json(model: &Model, torch_dtype: &str) -> serde_json::Value {
    let mut config = model.config.to_json(torch_dtype);
    config["tie_word_embeddings"] = std::sync::Arc::ptr_eq(&model.embed, &model.output).into();
    config
}

/// Tokenizer files for an output folder: copied from `source` when it is a Hugging Face folder
/// (keeping everything the original tokenizer files say), else written from the model's
/// tokenizer. Also writes generation_config.json when the source has none.
pub fn write_tokenizer_files(
    model: &Model,
    source: Option<&Path>,
    dir: &Path,
) -> Result<(), ExportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    const FILES: [&str; 6] = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "chat_template.jinja",
        "tokenizer.model",
    ];
    if let Some(src) = source.filter(|s| s.join("tokenizer.json").exists()) {
        for f in FILES {
            if src.join(f).exists() {
                std::fs::copy(src.join(f), dir.join(f)).map_err(io(&src.join(f)))?;
            }
        }
        if dir.join("generation_config.json").exists() {
            return Ok(());
        }
    } else if let Some(tok) = model.tokenizer() {
        let tj = dir.join("tokenizer.json");
        std::fs::write(&tj, tok.to_hf_json()?).map_err(io(&tj))?;
        write_json(
            &dir.join("tokenizer_config.json"),
            &tok.hf_tokenizer_config(model.config.max_position_embeddings),
        )?;
    }
    let mut gen = serde_json::json!({"_from_model_config": true});
    if let Some(b) = model.config.bos_token_id {
        gen["bos_token_id"] = b.into();
    }
    let eos: Vec<u32> = model
        .tokenizer()
        .map(|t| t.eos().to_vec())
        .unwrap_or_else(|| model.config.eos_token_ids.clone());
    if !eos.is_empty() {
        gen["eos_token_id"] = if eos.len() == 1 {
            eos[0].into()
        } else {
            eos.into()
        };
    }
    write_json(&dir.join("generation_config.json"), &gen)
}

pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
    std::fs::write(path, text + "\n").map_err(|source| ExportError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_row_inverts_the_gguf_permutation() {
        // convert_hf_to_gguf: within a head, new row 2j = old j, new row 2j+1 = old j + hd/2.
        let hd = 8;
        for r in 0..2 * hd {
            let a = adjacent_row(r, hd);
            let (head, j) = (a / hd, a % hd);
            let back = head * hd + if j % 2 == 0 { j / 2 } else { j / 2 + hd / 2 };
            assert_eq!(back, r);
        }
    }
}
