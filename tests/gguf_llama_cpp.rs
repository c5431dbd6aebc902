//! `quantize gguf` against llama.cpp itself on the real SmolLM2 base folder. Needs the peers, so
//! every test is ignored; run by hand with
//!
//! ```sh
//! QUANTIZE_LLAMA_CPP=/work/peers/llama.cpp QUANTIZE_LLAMA_CPP_BIN=/work/peers/llama.cpp/build-avx2/bin \
//! QUANTIZE_PEER_PYTHON=/work/peers/venv/bin/python QUANTIZE_PYTHON=.../oracle-venv/bin/python \
//! cargo test --release --test gguf_llama_cpp -- --ignored --nocapture
//! ```
//!
//! QUANTIZE_LLAMA_CPP is a llama.cpp checkout (for convert_hf_to_gguf.py, run by the peer Python
//! with torch and transformers), QUANTIZE_LLAMA_CPP_BIN holds llama-quantize.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn env_path(key: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os(key).unwrap_or_else(|| panic!("set {key} (see the doc comment)")),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn base() -> PathBuf {
    common::assets().join("base/smollm2-135m-instruct-bf16")
}

fn ours(model: &Path, ty: &str, out: &Path) {
    let o = common::quantize(&["gguf", "--model", p(model), "--type", ty, "--out", p(out)]);
    assert!(o.status.success(), "quantize gguf: {}", common::stderr(&o));
}

/// gguf_diff.py's (tensor differences, metadata differences) between two files.
fn diff(a: &Path, b: &Path, ignored_keys: &[&str]) -> (usize, Vec<String>, Vec<String>) {
    let out = common::python()
        .arg(common::oracle("gguf_diff.py"))
        .args([p(a), p(b)])
        .args(ignored_keys)
        .output()
        .unwrap();
    assert!(out.status.success(), "gguf_diff: {}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    (
        v["tensors"].as_u64().unwrap() as usize,
        list("tensor_diffs"),
        list("meta_diffs"),
    )
}

/// Our F16 conversion of the folder against convert_hf_to_gguf.py's: every tensor identical, and
/// every metadata key but the two naming heuristics of gguf-py we do not reproduce.
#[test]
#[ignore = "needs llama.cpp's convert_hf_to_gguf.py and torch (see the doc comment)"]
fn folder_converts_like_convert_hf_to_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let (theirs, mine) = (
        tmp.path().join("convert.gguf"),
        tmp.path().join("ours.gguf"),
    );
    let o = Command::new(env_path("QUANTIZE_PEER_PYTHON"))
        .arg(common::oracle("convert_hf.py"))
        .args([env_path("QUANTIZE_LLAMA_CPP"), base(), theirs.clone()])
        .arg("f16")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "convert_hf_to_gguf: {}",
        common::stderr(&o)
    );
    ours(&base(), "F16", &mine);
    let (n, tensors, meta) = diff(&mine, &theirs, &["general.basename", "general.finetune"]);
    println!(
        "convert_hf_to_gguf.py F16: {} of {n} tensors identical, {} metadata differences",
        n - tensors.len(),
        meta.len()
    );
    assert!(
        tensors.is_empty() && meta.is_empty(),
        "{tensors:#?}\n{meta:#?}"
    );
}

/// For every file type: llama-quantize applied to our F16 conversion gives the same file, byte
/// for byte, as quantizing the folder directly.
#[test]
#[ignore = "needs llama.cpp's llama-quantize (see the doc comment)"]
fn direct_quantization_equals_llama_quantize_of_the_f16_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let f16 = tmp.path().join("base-f16.gguf");
    ours(&base(), "F16", &f16);
    let bin = env_path("QUANTIZE_LLAMA_CPP_BIN");
    let mut identical = Vec::new();
    let mut failures = Vec::new();
    for ftype in quant::ggml::mix::LlamaFtype::all() {
        let ty = ftype.name();
        let (theirs, mine) = (
            tmp.path().join(format!("lq-{ty}.gguf")),
            tmp.path().join(format!("ours-{ty}.gguf")),
        );
        let o = Command::new(bin.join("llama-quantize"))
            .args([p(&f16), p(&theirs), ty, "2"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "llama-quantize {ty}: {}",
            common::stderr(&o)
        );
        ours(&base(), ty, &mine);
        if std::fs::read(&theirs).unwrap() == std::fs::read(&mine).unwrap() {
            identical.push(ty);
        } else {
            let (_, t, m) = diff(&mine, &theirs, &[]);
            failures.push(format!("{ty}: {t:?} {m:?}"));
        }
        std::fs::remove_file(&theirs).unwrap();
        std::fs::remove_file(&mine).unwrap();
    }
    let total = identical.len() + failures.len();
    println!(
        "byte-identical files: {}/{total} ({})",
        identical.len(),
        identical.join(" ")
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
