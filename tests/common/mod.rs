//! Shared helpers of the end-to-end tests: where the real assets are, the built CLI, Python.
#![allow(dead_code)]

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
