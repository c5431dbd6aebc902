//! Hugging Face folders of every supported shape — sharded bf16, Qwen2 with q/k/v biases and an
//! untied head in f16, Llama 3 RoPE scaling with GQA in f32, Mistral — built with random weights,
//! loaded by the runtime and checked against the float64 NumPy reference (tests/oracle/llama_ref.py),
//! which parses the safetensors itself. Also: `convert` round-trips a folder through shards.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use quant::safetensors_out::{Dtype, ShardedWriter, TensorSpec};
use rand::{Rng, SeedableRng};
use serde_json::json;

struct Variant {
    name: &'static str,
    config: serde_json::Value,
    dtype: Dtype,
    shard_bytes: usize,
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
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
fn write_model(dir: &Path, v: &Variant) {
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

fn base_config(model_type: &str) -> serde_json::Value {
    json!({
        "architectures": ["X"], "model_type": model_type, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 256, "vocab_size": 160, "tie_word_embeddings": true
    })
}

fn variants() -> Vec<Variant> {
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

fn max_logit_diff(model_dir: &Path, tokens: &[Vec<u32>]) -> f64 {
    let model = runtime::load(model_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (tj, rj) = (tmp.path().join("t.json"), tmp.path().join("r.json"));
    std::fs::write(&tj, serde_json::to_string(tokens).unwrap()).unwrap();
    let out = common::python()
        .arg(common::oracle("llama_ref.py"))
        .args([model_dir, &tj, &rj])
        .output()
        .unwrap();
    assert!(out.status.success(), "oracle: {}", common::stderr(&out));
    let want: Vec<Vec<Vec<f64>>> =
        serde_json::from_str(&std::fs::read_to_string(&rj).unwrap()).unwrap();
    let vocab = model.output.rows();
    let mut max = 0f64;
    for (t, w) in tokens.iter().zip(&want) {
        let got = model.forward(t, &mut model.new_cache(), 0);
        for (i, row) in w.iter().enumerate() {
            for (a, b) in got[i * vocab..(i + 1) * vocab].iter().zip(row) {
                max = max.max((*a as f64 - b).abs());
            }
        }
    }
    max
}

#[test]
fn every_folder_variant_matches_the_reference() {
    let tokens: Vec<Vec<u32>> = vec![
        (0..40).map(|i| (i * 37 % 160) as u32).collect(),
        vec![5, 9, 150, 3],
    ];
    for v in variants() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), &v);
        if v.shard_bytes < 1 << 20 {
            assert!(
                dir.path().join("model.safetensors.index.json").exists(),
                "{} not sharded",
                v.name
            );
        }
        let diff = max_logit_diff(dir.path(), &tokens);
        eprintln!("{}: max |Δlogit| vs float64 reference {diff:.2e}", v.name);
        // Logits here are O(1); f32 arithmetic over 2 layers stays near 1e-6.
        assert!(diff < 1e-4, "{}: max |Δlogit| {diff}", v.name);
    }
}

#[test]
fn convert_round_trips_through_shards() {
    let v = &variants()[1];
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_model(&src, v);
    let out = dir.path().join("out");
    let o = common::quantize(&[
        "convert",
        "--model",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "f16",
        "--max-shard-size",
        "30K",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(out.join("model.safetensors.index.json").exists());
    let (a, b) = (runtime::load(&src).unwrap(), runtime::load(&out).unwrap());
    let t: Vec<u32> = (0..12).collect();
    assert_eq!(
        a.forward(&t, &mut a.new_cache(), 0),
        b.forward(&t, &mut b.new_cache(), 0)
    );
}
