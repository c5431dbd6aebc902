//! general.* and architecture keys of a converted folder, as convert_hf_to_gguf.py writes them
//! (c392e50: `Model.set_gguf_parameters`, `LlamaModel.set_gguf_parameters`, gguf-py's metadata).
//! `general.file_type` and `general.quantization_version` are the quantizer's to add.

use std::path::Path;

use quant::gguf::Value;
use quant::hf::{LlamaConfig, RopeScaling};
use serde_json::Value as Json;

use super::{gguf_arch, HfGgufOptions};

pub(super) fn model_metadata(
    dir: &Path,
    raw: &Json,
    config: &LlamaConfig,
    opts: &HfGgufOptions,
    n_params: u64,
    tokenizer: Vec<(String, Value)>,
) -> Vec<(String, Value)> {
    let arch = gguf_arch(config.family);
    let s = |v: &str| Value::String(v.to_owned());
    let u = |v: usize| Value::U32(v as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let has = |k: &str| raw.get(k).is_some_and(|v| !v.is_null());
    let name = opts.name.clone().unwrap_or_else(|| display_name(dir));

    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s(arch)),
        ("general.type".into(), s("model")),
        ("general.name".into(), Value::String(name)),
        (
            "general.size_label".into(),
            Value::String(size_label(n_params)),
        ),
        (key("block_count"), u(config.num_hidden_layers)),
    ];
    if has("max_position_embeddings") {
        m.push((key("context_length"), u(config.max_position_embeddings)));
    }
    m.push((key("embedding_length"), u(config.hidden_size)));
    m.push((key("feed_forward_length"), u(config.intermediate_size)));
    m.push((key("attention.head_count"), u(config.num_attention_heads)));
    if has("num_key_value_heads") {
        m.push((
            key("attention.head_count_kv"),
            u(config.num_key_value_heads),
        ));
    }
    // Written even when config.json leaves it to its default (transformers v5 moved it into
    // rope_parameters, where convert_hf_to_gguf c392e50 does not look).
    m.push((key("rope.freq_base"), Value::F32(config.rope_theta as f32)));
    m.push((
        key("attention.layer_norm_rms_epsilon"),
        Value::F32(config.rms_norm_eps as f32),
    ));
    if has("head_dim") {
        m.push((key("attention.key_length"), u(config.head_dim)));
        m.push((key("attention.value_length"), u(config.head_dim)));
    }
    if arch == "llama" {
        m.push((key("vocab_size"), u(config.vocab_size)));
        m.push((key("rope.dimension_count"), u(config.head_dim)));
        if let Some(RopeScaling::Linear(factor)) = config.rope_scaling {
            m.push((key("rope.scaling.type"), s("linear")));
            m.push((key("rope.scaling.factor"), Value::F32(factor as f32)));
        }
    }
    m.extend(tokenizer);
    m
}

/// gguf-py's size label: the parameter count in K/M/B/T with at least two significant digits
/// ("135M", "1.7B", "8.0B").
pub fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let int_digits = format!("{}", round_half_even(scaled))
        .trim_start_matches('0')
        .len();
    let decimals = 2usize.saturating_sub(int_digits);
    format!("{scaled:.decimals$}{suffix}")
}

/// Python's round(): ties to even.
fn round_half_even(x: f64) -> u64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        (r - x.signum()) as u64
    } else {
        r as u64
    }
}

/// A readable model name from the folder's name, as gguf-py falls back to: words split at '-'
/// and '_', each starting upper-case ("smollm2-135m-instruct" → "Smollm2 135m Instruct"). A Hugging
/// Face cache snapshot (…/models--org--name/snapshots/<rev>) is named after its repository.
fn display_name(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let from_cache = dir
        .ancestors()
        .filter_map(|a| a.file_name()?.to_str())
        .find_map(|n| n.strip_prefix("models--"))
        .and_then(|repo| repo.rsplit("--").next().map(str::to_owned));
    let raw = from_cache
        .or_else(|| dir.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .unwrap_or_else(|| "model".into());
    raw.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            let first = c.next().map(|f| f.to_uppercase().collect::<String>());
            first.unwrap_or_default() + c.as_str()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels_round_like_gguf_py() {
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(1_711_376_384), "1.7B");
        assert_eq!(size_label(8_030_261_248), "8.0B");
        assert_eq!(size_label(70_553_706_496), "71B");
        assert_eq!(size_label(7_000), "7.0K");
        assert_eq!(size_label(361_821_120), "362M");
    }

    #[test]
    fn names_come_from_the_folder_or_the_cached_repository() {
        assert_eq!(
            display_name(Path::new("/x/smollm2-135m-instruct-bf16")),
            "Smollm2 135m Instruct Bf16"
        );
        assert_eq!(
            display_name(Path::new(
                "/c/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/abc123"
            )),
            "SmolLM2 135M Instruct"
        );
    }
}
