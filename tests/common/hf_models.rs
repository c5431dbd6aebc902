//! Hugging Face model folders with random weights, in every supported shape (sharded bf16,
//! Qwen2 with q/k/v biases and an untied head in f16, Llama 3 RoPE scaling with GQA in f32,
//! Mistral), for tests of the loaders and converters.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use quant::safetensors_out::{Dtype, ShardedWriter, TensorSpec};
use rand::{Rng, SeedableRng};
use serde_json::json;

pub struct Variant {
    pub name: &'static str,
    pub config: serde_json::Value,
    pub dtype: Dtype,
    pub shard_bytes: usize,
}

pub fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => unreachable!("dense dtypes only"),
    }
}

/// Writes a model folder with random weights for `cfg`.
pub fn write_model(dir: &Path, v: &Variant) {
    let c = &v.config;
    let get = |k: &str| c[k].as_u64().unwrap() as usize;
    let (d, ff, layers, vocab) = (
        get("hidden_size"),
        get("intermediate_size"),
        get("num_hidden_layers"),
        get("vocab_size"),
    );
    let (heads, kv) = (get("num_attention_heads"), get("num_key_value_heads"));
    let hd = c
        .get("head_dim")
        .and_then(|h| h.as_u64())
        .map_or(d / heads, |h| h as usize);
    let bias = c["model_type"] == "qwen2";
    let tied = c["tie_word_embeddings"].as_bool().unwrap();

    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, d])];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![d]));
        for (n, r, cc) in [
            ("q", heads * hd, d),
            ("k", kv * hd, d),
            ("v", kv * hd, d),
            ("o", d, heads * hd),
        ] {
            shapes.push((format!("{p}.self_attn.{n}_proj.weight"), vec![r, cc]));
            if bias && n != "o" {
                shapes.push((format!("{p}.self_attn.{n}_proj.bias"), vec![r]));
            }
        }
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        for (n, r, cc) in [("gate", ff, d), ("up", ff, d), ("down", d, ff)] {
            shapes.push((format!("{p}.mlp.{n}_proj.weight"), vec![r, cc]));
        }
    }
    shapes.push(("model.norm.weight".into(), vec![d]));
    if !tied {
        shapes.push(("lm_head.weight".into(), vec![vocab, d]));
    }
    let specs = shapes
        .iter()
        .map(|(n, s)| TensorSpec::new(n.clone(), v.dtype, s.clone()))
        .collect();
    let mut w = ShardedWriter::create(dir, specs, v.shard_bytes, BTreeMap::new()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = if shape.len() == 1 && name.contains("norm") {
            (0..n).map(|_| rng.random_range(0.5..1.5)).collect()
        } else {
            let scale = if shape.len() == 1 {
                0.1
            } else {
                1.0 / (shape[1] as f32).sqrt()
            };
            (0..n)
                .map(|_| rng.random_range(-1.0..1.0) * scale * 1.7)
                .collect()
        };
        w.write(name, &encode(&vals, v.dtype)).unwrap();
    }
    w.finish().unwrap();
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
}

pub fn base_config(model_type: &str) -> serde_json::Value {
    json!({
        "architectures": ["X"], "model_type": model_type, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 256, "vocab_size": 160, "tie_word_embeddings": true
    })
}

pub fn variants() -> Vec<Variant> {
    let mut qwen = base_config("qwen2");
    qwen["tie_word_embeddings"] = json!(false);
    let mut llama3 = base_config("llama");
    llama3["head_dim"] = json!(32);
    llama3["num_attention_heads"] = json!(4);
    llama3["num_key_value_heads"] = json!(1);
    llama3["rope_theta"] = json!(500000.0);
    llama3["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    vec![
        Variant {
            name: "llama-tied-bf16-sharded",
            config: base_config("llama"),
            dtype: Dtype::BF16,
            shard_bytes: 40_000,
        },
        Variant {
            name: "qwen2-bias-untied-f16",
            config: qwen,
            dtype: Dtype::F16,
            shard_bytes: 1 << 30,
        },
        Variant {
            name: "llama3-scaling-gqa-f32",
            config: llama3,
            dtype: Dtype::F32,
            shard_bytes: 1 << 30,
        },
        Variant {
            name: "mistral-bf16",
            config: base_config("mistral"),
            dtype: Dtype::BF16,
            shard_bytes: 1 << 30,
        },
    ]
}

/// Writes a byte-level BPE tokenizer of exactly `vocab` tokens (SmolLM2's pre-tokenizer, three
/// ChatML special tokens, printable ASCII, 'Ġ'-prefixed letters and some letter pairs, with the
/// merges that build them) and a tokenizer_config.json with a chat template, so a random-weight
/// folder converts to GGUF and tokenizes ASCII text.
pub fn write_tiny_tokenizer(dir: &Path, vocab: usize) {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let mut tokens: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    tokens.extend((33u8..127).map(|b| (b as char).to_string()));
    tokens.push("\u{120}".into());
    let mut merges: Vec<String> = Vec::new();
    let letters: Vec<char> = ('a'..='z').collect();
    for c in &letters {
        merges.push(format!("\u{120} {c}"));
        tokens.push(format!("\u{120}{c}"));
    }
    'pairs: for a in &letters {
        for b in &letters {
            if tokens.len() >= vocab {
                break 'pairs;
            }
            merges.push(format!("{a} {b}"));
            tokens.push(format!("{a}{b}"));
        }
    }
    assert!(
        tokens.len() == vocab,
        "vocab {vocab} too small for the base alphabet"
    );
    let v: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tj = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": v, "merges": merges}
    });
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let tc = json!({
        "add_bos_token": false, "add_eos_token": false, "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>", "clean_up_tokenization_spaces": false,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}
