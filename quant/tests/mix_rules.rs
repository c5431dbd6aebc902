//! The type mix against llama-quantize on model shapes the golden models do not have: 32 layers
//! (use_more_bits), tied embeddings without GQA, an 80-layer GQA model (the 70B rules), an
//! 8-expert MoE, a Falcon, and the per-tensor overrides. The expected types in
//! `fixtures/mix_rules.json` are what llama-quantize (llama.cpp c392e50) chose for these models
//! (all-zero F16 weights), per tensor kind as run-length-encoded layer sequences
//! (`"attn_v.weight": "Q6_K*4 Q4_K*2 Q6_K"`); regenerate with
//! `LLAMA_QUANTIZE=/path/to/llama-quantize cargo test --test mix_rules -- --ignored`.

use std::path::Path;

use quant::ggml::mix::{processing_order, LlamaFtype, MixOptions, MixPlanner, ModelFacts};
use quant::ggml::GgmlType;
use quant::gguf::{GgufFile, GgufWriter, TensorDesc, Value};
use serde_json::{json, Value as Json};

/// A synthetic model: architecture, metadata and tensor shapes.
struct Model {
    name: &'static str,
    arch: &'static str,
    n_layer: usize,
    n_embd: u64,
    n_head: u32,
    n_head_kv: u32,
    n_expert: u32,
    tied: bool,
}

const MODELS: [Model; 5] = [
    Model {
        name: "llama32",
        arch: "llama",
        n_layer: 32,
        n_embd: 256,
        n_head: 8,
        n_head_kv: 2,
        n_expert: 0,
        tied: false,
    },
    Model {
        name: "llama32_mha_tied",
        arch: "llama",
        n_layer: 32,
        n_embd: 256,
        n_head: 8,
        n_head_kv: 8,
        n_expert: 0,
        tied: true,
    },
    Model {
        name: "llama80_gqa",
        arch: "llama",
        n_layer: 80,
        n_embd: 256,
        n_head: 8,
        n_head_kv: 1,
        n_expert: 0,
        tied: false,
    },
    Model {
        name: "moe8",
        arch: "llama",
        n_layer: 4,
        n_embd: 256,
        n_head: 8,
        n_head_kv: 2,
        n_expert: 8,
        tied: false,
    },
    Model {
        name: "falcon16",
        arch: "falcon",
        n_layer: 16,
        n_embd: 256,
        n_head: 8,
        n_head_kv: 1,
        n_expert: 0,
        tied: false,
    },
];

const VOCAB: u64 = 256;

impl Model {
    fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let e = self.n_embd;
        let kv = e / self.n_head as u64 * self.n_head_kv as u64;
        let mut t: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![e, VOCAB]),
            ("output_norm.weight".into(), vec![e]),
        ];
        if !self.tied {
            t.push(("output.weight".into(), vec![e, VOCAB]));
        }
        for i in 0..self.n_layer {
            let mut add = |n: &str, d: Vec<u64>| t.push((format!("blk.{i}.{n}.weight"), d));
            add("attn_norm", vec![e]);
            add("attn_output", vec![e, e]);
            if self.arch == "falcon" {
                add("attn_qkv", vec![e, e + 2 * kv]);
                add("ffn_up", vec![e, 4 * e]);
                add("ffn_down", vec![4 * e, e]);
                continue;
            }
            add("ffn_norm", vec![e]);
            add("attn_q", vec![e, e]);
            add("attn_k", vec![e, kv]);
            add("attn_v", vec![e, kv]);
            if self.n_expert > 0 {
                let x = self.n_expert as u64;
                add("ffn_gate_inp", vec![e, x]);
                add("ffn_gate_exps", vec![e, e, x]);
                add("ffn_up_exps", vec![e, e, x]);
                add("ffn_down_exps", vec![e, e, x]);
            } else {
                add("ffn_gate", vec![e, e]);
                add("ffn_up", vec![e, e]);
                add("ffn_down", vec![e, e]);
            }
        }
        t
    }

    fn metadata(&self) -> Vec<(String, Value)> {
        let a = self.arch;
        let mut m = vec![
            ("general.architecture".to_owned(), Value::String(a.into())),
            (format!("{a}.context_length"), Value::U32(512)),
            (
                format!("{a}.embedding_length"),
                Value::U32(self.n_embd as u32),
            ),
            (format!("{a}.block_count"), Value::U32(self.n_layer as u32)),
            (
                format!("{a}.feed_forward_length"),
                Value::U32(self.n_embd as u32),
            ),
            (format!("{a}.attention.head_count"), Value::U32(self.n_head)),
            (
                format!("{a}.attention.head_count_kv"),
                Value::U32(self.n_head_kv),
            ),
            (format!("{a}.vocab_size"), Value::U32(VOCAB as u32)),
        ];
        if a == "falcon" {
            m.push((
                format!("{a}.attention.layer_norm_epsilon"),
                Value::F32(1e-5),
            ));
        } else {
            m.push((
                format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ));
        }
        if self.n_expert > 0 {
            m.push((format!("{a}.expert_count"), Value::U32(self.n_expert)));
            m.push((format!("{a}.expert_used_count"), Value::U32(2)));
        }
        m
    }

    /// Writes the model with all-zero weights (F16, norms F32).
    fn write(&self, path: &Path) {
        let ty = |d: &[u64]| {
            if d.len() == 1 {
                GgmlType::F32
            } else {
                GgmlType::F16
            }
        };
        let descs = self
            .tensors()
            .into_iter()
            .map(|(n, d)| TensorDesc::new(n, d.clone(), ty(&d)))
            .collect::<Vec<_>>();
        let mut w = GgufWriter::create(path, &self.metadata(), descs.clone()).unwrap();
        for d in descs {
            w.write_tensor(&d.name, &vec![0u8; d.n_bytes().unwrap() as usize])
                .unwrap();
        }
        w.finish().unwrap();
    }
}

/// The runs: every file type on every model, plus imatrix and override variants on llama32.
fn runs() -> Vec<(&'static str, String, Vec<String>)> {
    let mut runs = Vec::new();
    for m in &MODELS {
        for f in LlamaFtype::all() {
            runs.push((m.name, f.name().to_owned(), vec![]));
        }
    }
    let extra: [(&str, &[&str]); 7] = [
        ("IQ4_NL", &["--imatrix"]),
        ("IQ4_XS", &["--imatrix"]),
        ("Q4_0", &["--imatrix"]),
        ("Q5_0", &["--imatrix"]),
        (
            "Q4_K_M",
            &[
                "--output-tensor-type",
                "q4_0",
                "--token-embedding-type",
                "q8_0",
            ],
        ),
        ("Q4_K_M", &["--leave-output-tensor"]),
        ("Q5_K_M", &["--pure", "--output-tensor-type", "f16"]),
    ];
    for (f, args) in extra {
        let args = args.iter().map(|a| a.to_string()).collect();
        runs.push(("llama32", f.to_owned(), args));
    }
    runs
}

fn options(ftype: &str, args: &[String]) -> MixOptions {
    let mut o = MixOptions::new(LlamaFtype::parse(ftype).unwrap());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut ty = || GgmlType::from_name(it.next().unwrap()).unwrap();
        match a.as_str() {
            "--imatrix" => o.has_imatrix = true,
            "--pure" => o.pure = true,
            "--leave-output-tensor" => o.quantize_output_tensor = false,
            "--output-tensor-type" => o.output_tensor_type = Some(ty()),
            "--token-embedding-type" => o.token_embedding_type = Some(ty()),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// Splits `blk.N.rest` into (Some(N), rest), other names into (None, name).
fn split_layer(name: &str) -> (Option<usize>, &str) {
    name.strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, rest)| Some((Some(n.parse().ok()?), rest)))
        .unwrap_or((None, name))
}

/// Expands the fixture's per-kind encoding into the type of each tensor.
fn expected_type(types: &Json, name: &str) -> String {
    let (layer, kind) = split_layer(name);
    let enc = types[kind]
        .as_str()
        .unwrap_or_else(|| panic!("no entry for {kind}"));
    let Some(layer) = layer else {
        return enc.to_owned();
    };
    let seq: Vec<&str> = enc
        .split(' ')
        .flat_map(|tok| match tok.split_once('*') {
            Some((t, n)) => vec![t; n.parse().unwrap()],
            None => vec![tok],
        })
        .collect();
    seq[layer].to_owned()
}

/// The inverse of `expected_type` over a whole output file.
fn encode_types(g: &GgufFile) -> serde_json::Map<String, Json> {
    let mut kinds: std::collections::BTreeMap<&str, Vec<(usize, &str)>> = Default::default();
    let mut out = serde_json::Map::new();
    for t in &g.tensors {
        match split_layer(&t.name) {
            (Some(l), kind) => kinds.entry(kind).or_default().push((l, t.ty.name())),
            (None, name) => {
                out.insert(name.to_owned(), json!(t.ty.name()));
            }
        }
    }
    for (kind, mut seq) in kinds {
        seq.sort();
        let mut toks: Vec<(&str, usize)> = Vec::new();
        for (_, ty) in seq {
            match toks.last_mut() {
                Some((t, n)) if *t == ty => *n += 1,
                _ => toks.push((ty, 1)),
            }
        }
        let enc: Vec<String> = toks
            .iter()
            .map(|(t, n)| {
                if *n == 1 {
                    t.to_string()
                } else {
                    format!("{t}*{n}")
                }
            })
            .collect();
        out.insert(kind.to_owned(), json!(enc.join(" ")));
    }
    out
}

fn fixture_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mix_rules.json")
}

#[test]
fn planner_matches_llama_quantize() {
    let fixture: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture_path()).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for m in &MODELS {
        // the planner reads its facts the way quantize_model does: from the model file
        let path = dir.path().join(format!("{}.gguf", m.name));
        m.write(&path);
        let g = GgufFile::open(&path).unwrap();
        let facts = ModelFacts::from_gguf(&g).unwrap();
        let mut order: Vec<_> = g.tensors.iter().collect();
        order.sort_by(|a, b| processing_order(&a.name, &b.name));
        for run in fixture["runs"].as_array().unwrap() {
            if run["model"] != m.name {
                continue;
            }
            let args: Vec<String> = run["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().into())
                .collect();
            let ftype = run["ftype"].as_str().unwrap();
            let mut planner = MixPlanner::new(facts.clone(), options(ftype, &args));
            for t in &order {
                let got = planner.plan(&t.name, &t.dims, t.ty).unwrap();
                assert_eq!(
                    got.name(),
                    expected_type(&run["types"], &t.name),
                    "{} {ftype} {args:?}: {}",
                    m.name,
                    t.name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, runs().len());
    println!("mix rules: {checked}/{checked} llama-quantize runs reproduced");
}

#[test]
#[ignore = "needs llama.cpp's llama-quantize"]
fn regenerate_fixture_with_llama_quantize() {
    let exe = std::env::var("LLAMA_QUANTIZE").expect("LLAMA_QUANTIZE=path to llama-quantize");
    let dir = tempfile::tempdir().unwrap();
    // a one-entry legacy imatrix: llama-quantize then runs its has_imatrix rules
    let imatrix = dir.path().join("one.dat");
    let mut im = 1i32.to_le_bytes().to_vec();
    im.extend(4i32.to_le_bytes());
    im.extend(b"none");
    im.extend(1i32.to_le_bytes());
    im.extend(1i32.to_le_bytes());
    im.extend(1f32.to_le_bytes());
    std::fs::write(&imatrix, im).unwrap();
    let mut out_runs = Vec::new();
    for (model, ftype, args) in runs() {
        let m = MODELS.iter().find(|m| m.name == model).unwrap();
        let input = dir.path().join(format!("{model}.gguf"));
        if !input.exists() {
            m.write(&input);
        }
        let output = dir.path().join("out.gguf");
        let mut cmd = std::process::Command::new(&exe);
        for a in &args {
            cmd.arg(a);
            if a == "--imatrix" {
                cmd.arg(&imatrix);
            }
        }
        let status = cmd
            .arg(&input)
            .arg(&output)
            .arg(&ftype)
            .arg("2")
            .output()
            .unwrap();
        assert!(status.status.success(), "{model} {ftype} {args:?} failed");
        let g = GgufFile::open(&output).unwrap();
        let types = encode_types(&g);
        out_runs.push(json!({"model": model, "ftype": ftype, "args": args, "types": types}));
    }
    let json = serde_json::to_string_pretty(&json!({"runs": out_runs})).unwrap();
    std::fs::write(fixture_path(), json + "\n").unwrap();
}
