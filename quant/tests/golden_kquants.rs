//! Bit-exactness against llama.cpp: every run recorded in the shared K-quant golden data
//! (llama-quantize outputs of two mini Llama models: default mixes, --pure, --imatrix) is redone
//! through `quantize_model`, and every output tensor's type and data sha256 must match.
//!
//! The shared directory is `$QUANTIZE_SHARED`, else `../shared` beside the workspace.

use std::path::{Path, PathBuf};

use quant::ggml::mix::{LlamaFtype, MixOptions};
use quant::ggml::GgmlType;
use quant::gguf::{quantize_model, GgufFile, ImatrixSource, QuantizeParams};
use quant::imatrix::Imatrix;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn shared_dir() -> PathBuf {
    std::env::var_os("QUANTIZE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// llama-quantize's command-line flags as the golden runs record them.
struct RunArgs {
    pure: bool,
    imatrix: Option<String>,
}

fn parse_args(args: &[Json]) -> RunArgs {
    let mut out = RunArgs {
        pure: false,
        imatrix: None,
    };
    let mut it = args.iter().map(|a| a.as_str().expect("string argument"));
    while let Some(a) = it.next() {
        match a {
            "--pure" => out.pure = true,
            "--imatrix" => out.imatrix = Some(it.next().expect("--imatrix FILE").to_owned()),
            other => panic!("golden run uses an argument this test does not know: {other}"),
        }
    }
    out
}

/// Runs one golden entry, reading its importance matrix from `imatrix_file` when given;
/// returns the mismatches (empty when bit-exact).
fn check_run(
    dir: &Path,
    input: &Path,
    run: &Json,
    out_dir: &Path,
    imatrix_file: Option<&Path>,
) -> Vec<String> {
    let ftype = LlamaFtype::parse(run["ftype"].as_str().unwrap()).expect("known ftype");
    let args = parse_args(run["args"].as_array().unwrap());
    let imatrix = args.imatrix.as_ref().map(|f| {
        let path = imatrix_file.map_or_else(|| dir.join(f), Path::to_owned);
        let data = Imatrix::read(&path).expect("imatrix reads");
        (path, data)
    });
    let mut mix = MixOptions::new(ftype);
    mix.pure = args.pure;
    let params = QuantizeParams {
        mix,
        imatrix: imatrix.as_ref().map(|(path, data)| ImatrixSource {
            path: path.clone(),
            data,
        }),
        allow_requantize: false,
    };
    let out = out_dir.join("out.gguf");
    if let Err(e) = quantize_model(input, &out, &params, |_| {}) {
        return vec![format!("quantize_model failed: {e}")];
    }
    let g = GgufFile::open(&out).expect("output reads back");
    let want = run["tensors"].as_array().unwrap();
    let mut problems = Vec::new();
    if g.tensors.len() != want.len() {
        problems.push(format!(
            "{} tensors, golden has {}",
            g.tensors.len(),
            want.len()
        ));
    }
    for t in want {
        let name = t["name"].as_str().unwrap();
        let Some(info) = g.tensor(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        let ty = GgmlType::from_name(t["type"].as_str().unwrap()).expect("known type");
        let dims: Vec<u64> = t["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let sha = format!("{:x}", Sha256::digest(g.tensor_data(info)));
        if info.ty != ty || info.dims != dims {
            problems.push(format!(
                "{name}: {} {:?}, golden {ty} {dims:?}",
                info.ty, info.dims
            ));
        } else if sha != t["sha256"].as_str().unwrap() {
            problems.push(format!("{name}: {ty} bytes differ"));
        }
    }
    if run["kept"].as_bool() == Some(true) && imatrix_file.is_none() {
        let kept = dir.join(format!("mini-{}.gguf", run["ftype"].as_str().unwrap()));
        if std::fs::read(&kept).unwrap() != std::fs::read(&out).unwrap() {
            problems.push(format!("file differs from {}", kept.display()));
        }
    }
    problems
}

#[test]
fn every_golden_run_is_bit_exact() {
    let root = shared_dir().join("golden/kquants");
    assert!(
        root.is_dir(),
        "golden data not found at {} (set QUANTIZE_SHARED)",
        root.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let (mut total, mut exact) = (0, 0);
    let mut failures = Vec::new();
    for set in ["k512", "f576"] {
        let dir = root.join(set);
        let golden: Json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        let input = dir.join(golden["input"].as_str().unwrap());
        for (label, run) in golden["runs"].as_object().unwrap() {
            total += 1;
            let problems = check_run(&dir, &input, run, tmp.path(), None);
            if problems.is_empty() {
                exact += 1;
                println!("{set}/{label}: bit-exact");
            } else {
                println!("{set}/{label}: {} problems", problems.len());
                failures.push(format!("{set}/{label}:\n    {}", problems.join("\n    ")));
            }
        }
    }
    println!("golden kquants: {exact}/{total} runs bit-exact");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(total, 60, "the golden data lists 60 runs");
}

/// The same importance matrix converted to the GGUF format must give the same bytes: the
/// conversion keeps every importance value bit for bit.
#[test]
fn gguf_imatrix_quantizes_like_the_legacy_file() {
    let root = shared_dir().join("golden/kquants");
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for set in ["k512", "f576"] {
        let dir = root.join(set);
        let golden: Json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        let legacy = Imatrix::read(dir.join(golden["imatrix"].as_str().unwrap())).unwrap();
        let converted = legacy.write_gguf(tmp.path().join("imatrix.gguf")).unwrap();
        let input = dir.join(golden["input"].as_str().unwrap());
        for (label, run) in golden["runs"].as_object().unwrap() {
            if parse_args(run["args"].as_array().unwrap())
                .imatrix
                .is_none()
            {
                continue;
            }
            let problems = check_run(&dir, &input, run, tmp.path(), Some(&converted));
            assert!(problems.is_empty(), "{set}/{label}: {problems:?}");
            checked += 1;
        }
    }
    println!("GGUF imatrix: {checked}/{checked} runs bit-exact");
    assert_eq!(checked, 14);
}
