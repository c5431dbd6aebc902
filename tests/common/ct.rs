//! Helpers of the compressed-tensors tests: the bf16 base, running `quantize fp8|int8`, and
//! comparing the runtime's logits on a folder with transformers' (tests/oracle/ct_logits.py).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::reference::PROMPTS;

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The bf16 base every converter starts from: the prepared one, or made here from the GGUF.
pub fn base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let prepared = super::assets().join("base/smollm2-135m-instruct-bf16");
        if prepared.join("model.safetensors").exists() {
            return prepared;
        }
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let out = dir.path().join("base");
        let gguf = super::smollm_gguf();
        let o = super::quantize(&["convert", "--model", p(&gguf), "--out", p(&out)]);
        assert!(o.status.success(), "{}", super::stderr(&o));
        out
    })
    .clone()
}

/// Runs `quantize <args> --model BASE --out DIR/name` and returns the folder.
pub fn convert(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let base = base();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--model", p(&base), "--out", p(&out), "--threads", "2"]);
    let o = super::quantize(&all);
    assert!(
        o.status.success(),
        "quantize {args:?}: {}",
        super::stderr(&o)
    );
    out
}

/// Every scheme, calibrating ones on 4 samples × 128 tokens.
pub const SCHEMES: [(&str, &[&str]); 6] = [
    ("fp8-dynamic", &["fp8"]),
    (
        "fp8-static",
        &[
            "fp8",
            "--scheme",
            "static",
            "--nsamples",
            "4",
            "--seqlen",
            "128",
        ],
    ),
    ("fp8-block", &["fp8", "--scheme", "block"]),
    (
        "w8a8-sq0.5",
        &["int8", "--nsamples", "4", "--seqlen", "128"],
    ),
    ("w8a8-nosq", &["int8", "--no-smoothquant"]),
    ("w8a16", &["int8", "--weights-only"]),
];

/// The folders to compare: every subfolder of $QUANTIZE_CT_ARTIFACTS holding a
/// compressed-tensors config (e.g. ours and llm-compressor's, made by the bench script), else
/// each scheme converted here into `dir`.
pub fn folders(dir: &Path) -> Vec<(String, PathBuf)> {
    if let Some(root) = std::env::var_os("QUANTIZE_CT_ARTIFACTS") {
        let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| {
                std::fs::read_to_string(d.join("config.json"))
                    .is_ok_and(|c| c.contains("compressed-tensors"))
            })
            .map(|d| (d.file_name().unwrap().to_string_lossy().into_owned(), d))
            .collect();
        v.sort();
        return v;
    }
    SCHEMES
        .iter()
        .map(|(name, args)| (name.to_string(), convert(dir, name, args)))
        .collect()
}

#[derive(Debug)]
pub struct Parity {
    pub positions: usize,
    pub agree: usize,
    pub max_diff: f64,
    pub mean_diff: f64,
}

/// The interpreter with torch, transformers and compressed-tensors.
pub fn peer_python() -> String {
    std::env::var("QUANTIZE_PEER_PYTHON").expect(
        "QUANTIZE_PEER_PYTHON names a python with torch, transformers and compressed-tensors",
    )
}

/// Our logits on the prompts against transformers' on the same folder (with or without
/// compressed-tensors' activation quantization); Err with transformers' message if it fails.
pub fn compare(folder: &Path, act_quant: bool) -> Result<Parity, String> {
    let model = runtime::load(folder).unwrap();
    let tok = model.tokenizer().unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|s| tok.encode(s, true).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let reference = dir.path().join("hf.json");
    std::fs::write(&tokens, serde_json::to_string(&prompts).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(peer_python());
    cmd.arg(super::oracle("ct_logits.py"))
        .args([folder, &tokens, &reference]);
    if !act_quant {
        cmd.arg("--no-act-quant");
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        let err = super::stderr(&out);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(last.to_owned());
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert_eq!(
        v["quantized_linears"], 210,
        "transformers quantized every block linear"
    );
    let want: Vec<Vec<Vec<f64>>> = serde_json::from_value(v["logits"].clone()).unwrap();
    let vocab = model.output.rows();
    let argmax = |v: &mut dyn Iterator<Item = f64>| {
        v.enumerate()
            .fold((0, f64::MIN), |b, (i, x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    let (mut positions, mut agree, mut max_diff, mut sum, mut n) = (0, 0, 0f64, 0f64, 0usize);
    for (toks, w) in prompts.iter().zip(&want) {
        let got = model.forward(toks, &mut model.new_cache(), 0);
        for (t, wr) in w.iter().enumerate() {
            let g = &got[t * vocab..(t + 1) * vocab];
            positions += 1;
            agree += (argmax(&mut g.iter().map(|x| *x as f64)) == argmax(&mut wr.iter().copied()))
                as usize;
            for (a, b) in g.iter().zip(wr) {
                let d = (*a as f64 - b).abs();
                max_diff = max_diff.max(d);
                sum += d;
                n += 1;
            }
        }
    }
    Ok(Parity {
        positions,
        agree,
        max_diff,
        mean_diff: sum / n as f64,
    })
}

/// Linear-by-linear agreement with transformers on the same inputs.
#[derive(Debug)]
pub struct LinearParity {
    pub linears: usize,
    /// Largest and median ‖y_ours − y_hf‖ / ‖y_hf‖ over the linears.
    pub max_rel: f64,
    pub median_rel: f64,
}

/// Feeds every quantized linear the input transformers gave it (tests/oracle/ct_linears.py, on
/// the longest prompt) and compares our output with transformers'.
pub fn compare_linears(folder: &Path) -> Result<LinearParity, String> {
    let model = runtime::load(folder).unwrap();
    let tok = model.tokenizer().unwrap();
    let prompt = tok.encode(PROMPTS[5], true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    std::fs::write(&tokens, serde_json::to_string(&prompt).unwrap()).unwrap();
    let out = std::process::Command::new(peer_python())
        .arg(super::oracle("ct_linears.py"))
        .args([folder, &tokens, dir.path()])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = super::stderr(&out);
        return Err(err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_owned());
    }
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("index.json")).unwrap())
            .unwrap();
    let floats = |name: String| -> Vec<f32> {
        let b = std::fs::read(dir.path().join(name)).unwrap();
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut rel = Vec::new();
    for e in &index {
        let (layer, module) = (
            e["layer"].as_u64().unwrap() as usize,
            e["module"].as_str().unwrap(),
        );
        let n_tok = e["n_tok"].as_u64().unwrap() as usize;
        let kind = runtime::model::LinearKind::ALL
            .into_iter()
            .find(|k| k.hf_name() == module)
            .unwrap();
        let w = &model.layers[layer].linear(kind).w;
        let x = floats(format!("{layer}.{module}.in"));
        let want = floats(format!("{layer}.{module}.out"));
        let mut y = vec![0f32; n_tok * w.rows()];
        w.matmul(&x, n_tok, &mut y);
        let d: f64 = y
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let n: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        rel.push((d / n.max(1e-30)).sqrt());
    }
    rel.sort_by(|a, b| a.total_cmp(b));
    Ok(LinearParity {
        linears: rel.len(),
        max_rel: *rel.last().unwrap(),
        median_rel: rel[rel.len() / 2],
    })
}
