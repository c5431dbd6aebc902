//! Hugging Face folders of every supported shape — sharded bf16, Qwen2 with q/k/v biases and an
//! untied head in f16, Llama 3 RoPE scaling with GQA in f32, Mistral — built with random weights,
//! loaded by the runtime and checked against the float64 NumPy reference (tests/oracle/llama_ref.py),
//! which parses the safetensors itself. Also: `convert` round-trips a folder through shards.

mod common;

use std::path::Path;

use common::hf_models::{variants, write_model};

fn max_logit_diff(model_dir: &Path, tokens: &[Vec<u32>]) -> f64 {
    let model = runtime::load(model_dir).unwrap();
    let want = common::reference::reference_logits(model_dir, tokens);
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
