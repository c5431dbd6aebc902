//! `quantize gguf` from Hugging Face folders, checked without llama.cpp: every tensor and metadata
//! key of the converted file against gguf-py and NumPy reading the folder
//! (tests/oracle/gguf_vs_hf.py), the runtime's logits on the converted file against the float64
//! reference on the folder (tests/oracle/llama_ref.py), and the tokenizer the runtime builds from
//! the GGUF against the one it reads from the folder. (tests/gguf_llama_cpp.rs compares with
//! llama.cpp itself.)

mod common;

use std::path::Path;

use common::hf_models::{variants, write_model, write_tiny_tokenizer};
use quant::gguf::GgufFile;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn gguf(model: &Path, ty: &str, out: &Path) {
    let o = common::quantize(&["gguf", "--model", p(model), "--type", ty, "--out", p(out)]);
    assert!(o.status.success(), "quantize gguf: {}", common::stderr(&o));
}

/// gguf_vs_hf.py's report on `file` converted from `folder`: (tensors checked, problems).
fn oracle_problems(file: &Path, folder: &Path) -> (usize, Vec<String>) {
    let out = common::python()
        .arg(common::oracle("gguf_vs_hf.py"))
        .args([file, folder])
        .output()
        .unwrap();
    assert!(out.status.success(), "oracle: {}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    (v["tensors"].as_u64().unwrap() as usize, problems)
}

fn base() -> std::path::PathBuf {
    common::assets().join("base/smollm2-135m-instruct-bf16")
}

#[test]
fn real_base_converts_tensor_for_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("base-f16.gguf");
    gguf(&base(), "F16", &out);
    let (n, problems) = oracle_problems(&out, &base());
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        n, 272,
        "30 layers x 9 tensors, token_embd, output_norm (tied head)"
    );
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.req_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(g.req_int("general.file_type").unwrap(), 1);
}

#[test]
fn tokenizer_from_the_gguf_matches_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("base-q8.gguf");
    gguf(&base(), "Q8_0", &out);
    let from_gguf = runtime::Tokenizer::from_gguf(&GgufFile::open(&out).unwrap()).unwrap();
    let from_hf = runtime::Tokenizer::from_hf_dir(&base()).unwrap();
    let wiki = std::fs::read_to_string(common::assets().join("text/wiki.txt")).unwrap();
    let mut text: String = wiki.chars().take(60_000).collect();
    text.push_str(" 1234567 <|im_start|>user\nnaïve café 你好 🚀\t\ttabs  and   spaces<|im_end|>");
    let (a, b) = (
        from_gguf.encode(&text, true).unwrap(),
        from_hf.encode(&text, true).unwrap(),
    );
    assert!(a.len() > 10_000);
    assert_eq!(a, b, "token ids differ");
    assert_eq!(from_gguf.decode(&a), from_hf.decode(&b));
    assert_eq!(
        (from_gguf.bos(), from_gguf.eos(), from_gguf.adds_bos()),
        (from_hf.bos(), from_hf.eos(), from_hf.adds_bos())
    );
    let chat = [runtime::tokenizer::ChatMessage {
        role: "user".into(),
        content: "Hi there".into(),
    }];
    assert_eq!(
        from_gguf.apply_chat_template(&chat, true).unwrap(),
        from_hf.apply_chat_template(&chat, true).unwrap()
    );
}

#[test]
fn every_folder_variant_converts_and_runs_like_the_folder() {
    let tokens: Vec<Vec<u32>> = vec![(0..40).map(|i| (i * 37 % 160) as u32).collect()];
    for v in variants() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("model");
        std::fs::create_dir(&folder).unwrap();
        write_model(&folder, &v);
        write_tiny_tokenizer(&folder, 160);
        let dense = dir.path().join("dense.gguf");
        gguf(&folder, "F32", &dense);
        let (_, problems) = oracle_problems(&dense, &folder);
        assert!(problems.is_empty(), "{}: {problems:#?}", v.name);

        // Logits of the converted file (llama's permuted Q/K with adjacent-pair RoPE, Llama 3's
        // rope_freqs) against the float64 reference reading the folder.
        let want = common::reference::reference_logits(&folder, &tokens);
        let model = runtime::load(&dense).unwrap();
        let got = model.forward(&tokens[0], &mut model.new_cache(), 0);
        let diff = got
            .iter()
            .zip(want[0].iter().flatten())
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0f64, f64::max);
        eprintln!(
            "{}: GGUF F32 vs reference on the folder: max |Δlogit| {diff:.2e}",
            v.name
        );
        assert!(diff < 1e-4, "{}: max |Δlogit| {diff}", v.name);

        // The same folder through a quantized type still runs (row length 64 takes Q8_0 here).
        let q = dir.path().join("q.gguf");
        gguf(&folder, "Q6_K", &q);
        let model = runtime::load(&q).unwrap();
        let gq = model.forward(&tokens[0], &mut model.new_cache(), 0);
        let rms = |v: &mut dyn Iterator<Item = f32>| {
            let (s, n) = v.fold((0f64, 0usize), |(s, n), x| (s + (x as f64).powi(2), n + 1));
            (s / n as f64).sqrt()
        };
        let rel = rms(&mut gq.iter().zip(&got).map(|(a, b)| a - b)) / rms(&mut got.iter().copied());
        assert!(
            rel < 0.05,
            "{}: Q6_K mix drifts (relative rms {rel})",
            v.name
        );
    }
}
