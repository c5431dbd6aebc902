//! Shared helpers of the end-to-end tests: where the real assets are, the built CLI, Python.
#![allow(dead_code)]

pub mod ct;
pub mod hf_models;
pub mod reference;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The asset cache filled by scripts/fetch-assets.sh.
pub fn assets() -> PathBuf {
    let dir = calib::data::assets_dir();
    assert!(
        dir.join("models/SmolLM2-135M-Instruct.Q4_1.gguf").exists(),
        "real assets missing under {}: run scripts/fetch-assets.sh first",
        dir.display()
    );
    dir
}

pub fn smollm_gguf() -> PathBuf {
    assets().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// ../shared beside the checkout (or $QUANTIZE_SHARED).
pub fn shared() -> PathBuf {
    std::env::var_os("QUANTIZE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// The Python interpreter with numpy and gguf installed ($QUANTIZE_PYTHON or python3).
pub fn python() -> Command {
    Command::new(std::env::var("QUANTIZE_PYTHON").unwrap_or_else(|_| "python3".into()))
}

pub fn oracle(script: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(script)
}

/// Runs the quantize CLI built for this test run.
pub fn quantize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args(args)
        .output()
        .expect("the quantize binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Bytes of a small GGUF v3 file: string metadata and F32 tensors (name, dims, ggml type id),
/// with the data section zero-filled. Enough to exercise loaders on crafted inputs.
pub fn tiny_gguf(meta: &[(&str, &str)], tensors: &[(&str, &[u64], u32)]) -> Vec<u8> {
    fn s(b: &mut Vec<u8>, x: &str) {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    }
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        s(&mut b, k);
        b.extend(8u32.to_le_bytes());
        s(&mut b, v);
    }
    let mut offset = 0u64;
    for (name, dims, ty) in tensors {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += dims.iter().product::<u64>() * 4;
        offset = offset.div_ceil(32) * 32;
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.resize(b.len() + offset as usize, 0);
    b
}

/// Asserts a failed run: non-zero exit, no panic, and an error message containing every `needle`.
pub fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}
