//! Bad input gets a clear error naming the file and the field, a non-zero exit, no panic, and no
//! partial output.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_clean_failure, quantize, tiny_gguf};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `convert` on `model` and checks it failed cleanly without leaving output behind.
fn convert_fails(model: &Path, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = quantize(&["convert", "--model", p(model), "--out", p(&out)]);
    assert_clean_failure(&o, needles);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "partial output left behind"
    );
}

#[test]
fn truncated_gguf_header() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cut.gguf");
    let full = fs::read(common::smollm_gguf()).unwrap();
    fs::write(&f, &full[..4096]).unwrap();
    convert_fails(&f, &["cut.gguf", "truncated", "tokenizer.ggml.tokens"]);
}

#[test]
fn tensor_data_past_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("short.gguf");
    let full = fs::read(common::smollm_gguf()).unwrap();
    fs::write(&f, &full[..full.len() / 2]).unwrap();
    convert_fails(&f, &["short.gguf", "past the end of the file", "tensor "]);
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("model.gguf");
    let mut b = tiny_gguf(&[("general.architecture", "llama")], &[("w", &[32], 0)]);
    b[..4].copy_from_slice(b"GGJT");
    fs::write(&f, b).unwrap();
    convert_fails(&f, &["model.gguf", "not a GGUF file"]);
}

#[test]
fn unknown_ggml_type() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("odd.gguf");
    fs::write(
        &f,
        tiny_gguf(
            &[("general.architecture", "llama")],
            &[("blk.0.attn_q.weight", &[32, 4], 77)],
        ),
    )
    .unwrap();
    convert_fails(
        &f,
        &["odd.gguf", "blk.0.attn_q.weight", "unknown ggml type id 77"],
    );
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gemma.gguf");
    fs::write(
        &f,
        tiny_gguf(
            &[("general.architecture", "gemma3")],
            &[("token_embd.weight", &[32, 4], 0)],
        ),
    )
    .unwrap();
    convert_fails(
        &f,
        &[
            "gemma.gguf",
            "general.architecture",
            "gemma3",
            "supported: llama, qwen2",
        ],
    );
}

#[test]
fn missing_gguf_hyperparameter() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nohp.gguf");
    fs::write(
        &f,
        tiny_gguf(
            &[("general.architecture", "llama")],
            &[("token_embd.weight", &[32, 4], 0)],
        ),
    )
    .unwrap();
    convert_fails(&f, &["nohp.gguf", "llama.embedding_length", "missing"]);
}

/// A copy of the base folder's small files, with the weights linked, for corrupting.
fn folder_like_base(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    let dst = dir.join("model");
    let o = quantize(&[
        "convert",
        "--model",
        p(&common::smollm_gguf()),
        "--out",
        p(&src),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    fs::create_dir(&dst).unwrap();
    for e in fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        fs::rename(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn hf_folder_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = folder_like_base(dir.path());
    let cfg_path = model.join("config.json");
    let good_cfg = fs::read_to_string(&cfg_path).unwrap();

    // missing config field
    let mut cfg: serde_json::Value = serde_json::from_str(&good_cfg).unwrap();
    cfg.as_object_mut().unwrap().remove("intermediate_size");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    convert_fails(&model, &["config.json", "intermediate_size", "missing"]);

    // unsupported architecture in config.json
    let mut cfg: serde_json::Value = serde_json::from_str(&good_cfg).unwrap();
    cfg["model_type"] = "gpt_neox".into();
    cfg["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    convert_fails(
        &model,
        &["config.json", "unsupported architecture GPTNeoXForCausalLM"],
    );

    // corrupt safetensors header: the length prefix points past the end of the file
    fs::write(&cfg_path, &good_cfg).unwrap();
    let st = model.join("model.safetensors");
    let mut bytes = fs::read(&st).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    fs::write(&st, &bytes).unwrap();
    convert_fails(&model, &["model.safetensors", "corrupt safetensors"]);

    // header that is not JSON
    bytes[..8].copy_from_slice(&16u64.to_le_bytes());
    bytes[8..24].copy_from_slice(b"{\"a\": not json!}");
    fs::write(&st, &bytes).unwrap();
    convert_fails(&model, &["model.safetensors", "corrupt safetensors"]);
}

#[test]
fn not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    fs::write(&f, "hello").unwrap();
    convert_fails(
        &f,
        &[
            "notes.txt",
            "not a GGUF file or a Hugging Face model folder",
        ],
    );
    convert_fails(dir.path(), &["no config.json"]);
}
