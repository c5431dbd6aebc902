//! Bad input to `quantize gguf` and `quantize imatrix`: a clear error naming the file and the
//! field, a non-zero exit, no panic, and nothing left where the output was to go.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::hf_models::{variants, write_model, write_tiny_tokenizer};
use common::{assert_clean_failure, quantize};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A random-weight llama folder (width 64) with a tokenizer, in `dir/model`.
fn tiny_folder(dir: &Path) -> PathBuf {
    let folder = dir.join("model");
    fs::create_dir(&folder).unwrap();
    write_model(&folder, &variants()[3]);
    write_tiny_tokenizer(&folder, 160);
    folder
}

/// Runs `quantize gguf` on `model` with `extra` arguments into `out_dir/out.gguf`, expects a clean
/// failure mentioning every needle, and checks that `out_dir` is left empty.
fn gguf_fails(model: &Path, extra: &[&str], needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.gguf");
    let mut args = vec!["gguf", "--model", p(model), "--out", p(&out)];
    args.extend(extra);
    assert_clean_failure(&quantize(&args), needles);
    assert_eq!(
        fs::read_dir(out_dir.path()).unwrap().count(),
        0,
        "partial output left behind"
    );
}

#[test]
fn unknown_types_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_folder(dir.path());
    gguf_fails(
        &model,
        &["--type", "Q9_Z"],
        &["unknown type \"Q9_Z\"", "Q4_K_M", "IQ4_XS"],
    );
    gguf_fails(
        &model,
        &["--type", "Q4_K_M", "--output-tensor-type", "Q7_K"],
        &["unknown tensor type \"Q7_K\"", "Q6_K"],
    );
}

#[test]
fn quantized_input_needs_allow_requantize() {
    gguf_fails(
        &common::smollm_gguf(),
        &["--type", "Q8_0"],
        &[
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "is already Q4_1",
            "--allow-requantize",
        ],
    );
}

#[test]
fn rows_that_fit_no_type() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_folder(dir.path());
    // --pure takes no fallback: rows of 64 are no whole Q4_K block
    gguf_fails(
        &model,
        &["--type", "Q4_K_M", "--pure"],
        &["model", "rows of 64 fit neither Q4_K nor a fallback type"],
    );
}

#[test]
fn imatrix_that_does_not_fit_lists_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_folder(dir.path());
    // a legacy .dat: (name, values) entries with one call each, no trailer
    let dat = |entries: &[(&str, usize)]| {
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, n) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(1i32.to_le_bytes());
            b.extend((*n as i32).to_le_bytes());
            (0..*n).for_each(|_| b.extend(1f32.to_le_bytes()));
        }
        b
    };
    let im = dir.path().join("wrong.dat");
    fs::write(
        &im,
        dat(&[
            ("blk.0.attn_q.weight", 100),
            ("blk.1.ffn_down.weight", 7),
            ("blk.0.ffn_up.weight", 64),
        ]),
    )
    .unwrap();
    gguf_fails(
        &model,
        &["--type", "Q4_0", "--imatrix", p(&im)],
        &[
            "wrong.dat does not fit the model",
            "blk.0.attn_q.weight: 100 values, the tensor needs 64",
            "blk.1.ffn_down.weight: 7 values, the tensor needs 96",
        ],
    );
    fs::write(&im, dat(&[("model.layers.0.self_attn.q_proj", 64)])).unwrap();
    gguf_fails(
        &model,
        &["--type", "Q4_0", "--imatrix", p(&im)],
        &[
            "none of its 1 entries names a tensor being quantized",
            "model.layers.0.self_attn.q_proj",
        ],
    );
    let full = fs::read(&im).unwrap();
    fs::write(&im, &full[..full.len() - 10]).unwrap();
    gguf_fails(
        &model,
        &["--type", "Q4_0", "--imatrix", p(&im)],
        &["wrong.dat", "file ends"],
    );
}

#[test]
fn truncated_and_corrupt_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_folder(dir.path());
    let st = model.join("model.safetensors");
    let good = fs::read(&st).unwrap();
    fs::write(&st, &good[..good.len() - 100]).unwrap();
    gguf_fails(
        &model,
        &["--type", "Q8_0"],
        &["model.safetensors", "corrupt safetensors"],
    );
    fs::write(&st, &good).unwrap();

    // a truncated GGUF input
    let g = dir.path().join("m-f16.gguf");
    let o = quantize(&[
        "gguf",
        "--model",
        p(&model),
        "--type",
        "F16",
        "--out",
        p(&g),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let bytes = fs::read(&g).unwrap();
    fs::write(&g, &bytes[..bytes.len() / 2]).unwrap();
    gguf_fails(
        &g,
        &["--type", "Q8_0"],
        &["m-f16.gguf", "past the end of the file"],
    );
    fs::write(&g, &bytes[..1000]).unwrap();
    gguf_fails(&g, &["--type", "Q8_0"], &["m-f16.gguf", "truncated"]);

    // a tokenizer llama.cpp could not tokenize with, and none at all
    let tj = model.join("tokenizer.json");
    let mut t: serde_json::Value = serde_json::from_str(&fs::read_to_string(&tj).unwrap()).unwrap();
    t["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
    fs::write(&tj, t.to_string()).unwrap();
    gguf_fails(
        &model,
        &["--type", "Q8_0"],
        &[
            "tokenizer.json",
            "pre_tokenizer",
            "no llama.cpp pre-tokenizer",
        ],
    );
    fs::remove_file(&tj).unwrap();
    gguf_fails(&model, &["--type", "Q8_0"], &["tokenizer.json", "missing"]);
}

#[test]
fn models_that_do_not_exist_say_where_they_were_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args([
            "gguf",
            "--model",
            "someorg/somemodel",
            "--type",
            "Q8_0",
            "--out",
        ])
        .arg(dir.path().join("x.gguf"))
        .env("HF_HUB_CACHE", dir.path().join("hub"))
        .output()
        .unwrap();
    assert_clean_failure(
        &o,
        &["someorg/somemodel", "hub", "huggingface-cli download"],
    );
    gguf_fails(
        Path::new("no/such/dir/model.gguf"),
        &["--type", "Q8_0"],
        &["no such file or folder"],
    );
}

#[test]
fn imatrix_bad_calibration_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_folder(dir.path());
    let out = dir.path().join("im.gguf");
    let jsonl = dir.path().join("bad.jsonl");
    fs::write(&jsonl, "{\"text\": \"fine\"}\n{not json\n").unwrap();
    let o = quantize(&[
        "imatrix",
        "--model",
        p(&model),
        "--calib",
        p(&jsonl),
        "--out",
        p(&out),
    ]);
    assert_clean_failure(&o, &["bad.jsonl", "line 2", "not valid JSON"]);
    let txt = dir.path().join("short.txt");
    fs::write(&txt, "only a few words").unwrap();
    let o = quantize(&[
        "imatrix",
        "--model",
        p(&model),
        "--text",
        p(&txt),
        "--out",
        p(&out),
    ]);
    assert_clean_failure(&o, &["short.txt", "needs at least 1024"]);
    assert!(!out.exists());
}
