//! `quantize ppl`, `kld`, `eval` and `gate` end to end on the real SmolLM2 GGUF, kept short (a few
//! chunks, a few items). Perplexity and log-likelihoods are checked against the float64 NumPy
//! forward pass (tests/oracle/logprobs_ref.py), from which the test computes llama-perplexity's
//! estimate and lm-eval's scores itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{assert_clean_failure, assets, python, smollm_gguf, stderr, stdout};
use serde_json::Value;

/// The CLI with unquantized activations, so it computes what the float64 reference does.
fn exact(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args(args)
        .env("QUANTIZE_ACTIVATIONS", "f32")
        .output()
        .expect("the quantize binary runs")
}

fn ok(o: Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

fn run(args: &[&str]) -> Output {
    common::quantize(args)
}

/// A temporary directory for the whole test binary (kept until the process ends).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The first `chars` characters of the Wikipedia text, as a file.
fn wiki_prefix(chars: usize) -> PathBuf {
    let p = scratch().join(format!("wiki-{chars}.txt"));
    if !p.exists() {
        let text = std::fs::read_to_string(assets().join("text/wiki.txt")).unwrap();
        let cut: String = text.chars().take(chars).collect();
        std::fs::write(&p, cut).unwrap();
    }
    p
}

/// The GGUF converted to a bf16 Hugging Face folder: the same model up to bf16 rounding, read
/// through a different loader and tokenizer file.
fn bf16_folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = scratch().join("bf16");
        let o = run(&[
            "convert",
            "-m",
            smollm_gguf().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    })
}

/// Per-sequence float64 log-probabilities of each next token, and whether it was the argmax.
fn reference(model: &Path, seqs: &[Vec<u32>]) -> Vec<(Vec<f64>, Vec<bool>)> {
    let seq_path = scratch().join(format!("seqs-{}.json", seqs.len()));
    let out_path = seq_path.with_extension("out.json");
    std::fs::write(&seq_path, serde_json::to_string(seqs).unwrap()).unwrap();
    let o = python()
        .arg(common::oracle("logprobs_ref.py"))
        .args([model, &seq_path, &out_path])
        .output()
        .expect("python runs (set QUANTIZE_PYTHON to an interpreter with numpy and gguf)");
    assert!(o.status.success(), "oracle failed: {}", stderr(&o));
    let v: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    v.iter()
        .map(|r| {
            let lp = r["logprob"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let g = r["greedy"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_bool().unwrap())
                .collect();
            (lp, g)
        })
        .collect()
}

/// Samples written by `quantize eval --samples`.
fn samples(args: &[&str], name: &str) -> (Value, Vec<Value>) {
    let path = scratch().join(name);
    let mut a = args.to_vec();
    a.extend(["--samples", path.to_str().unwrap(), "--json"]);
    let r = ok(exact(&a));
    let lines = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, lines)
}

#[test]
fn perplexity_and_log_likelihoods_match_the_float64_reference() {
    let gguf = smollm_gguf();
    let g = gguf.to_str().unwrap();
    let (ctx, chunks) = (64usize, 2usize);
    let text = wiki_prefix(3000);
    let ppl = ok(exact(&[
        "ppl",
        "-m",
        g,
        "-f",
        text.to_str().unwrap(),
        "--ctx",
        &ctx.to_string(),
        "--chunks",
        &chunks.to_string(),
        "--json",
    ]));
    let (r, lines) = samples(
        &[
            "eval",
            "-m",
            g,
            "--tasks",
            "arc_easy,winogrande,lambada",
            "--limit",
            "1",
        ],
        "samples.jsonl",
    );
    // MMLU's prompt (checked against lm-eval's on every subject by hand, see README); its scoring
    // is the same code as the others'.
    let (mmlu, mmlu_lines) = samples(
        &[
            "eval",
            "-m",
            g,
            "--tasks",
            "mmlu_abstract_algebra",
            "--limit",
            "1",
            "--shots",
            "1",
        ],
        "samples-mmlu.jsonl",
    );
    let tasks = r["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| t["items"] == 1));
    assert!(tasks[0]["acc_norm"].is_object() && tasks[1].get("acc_norm").is_none());
    assert!(tasks[2]["ppl"]["value"].as_f64().unwrap() > 1.0);
    assert_eq!(mmlu["tasks"][0]["shots"], 1);
    let prompt = mmlu_lines[0]["requests"][0]["context"].as_str().unwrap();
    assert!(prompt.starts_with(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    ));
    assert_eq!(prompt.matches("\nAnswer:").count(), 2);

    // The reference side: our tokenizer (tested elsewhere), llama-perplexity's chunking and
    // scoring and lm-eval's log-likelihood spans written out here, float64 log-probabilities
    // from NumPy, all sequences in one oracle run.
    let model = runtime::load(&gguf).unwrap();
    let tok = model.tokenizer().unwrap();
    let tokens = tok
        .encode(&std::fs::read_to_string(&text).unwrap(), true)
        .unwrap();
    assert_eq!(ppl["text_tokens"].as_u64().unwrap() as usize, tokens.len());
    let mut seqs: Vec<Vec<u32>> = (0..chunks)
        .map(|i| {
            let mut c = tokens[i * ctx..(i + 1) * ctx].to_vec();
            if tok.adds_bos() {
                c[0] = tok.bos().unwrap();
            }
            c
        })
        .collect();
    let mut spans = Vec::new();
    for s in &lines {
        for req in s["requests"].as_array().unwrap() {
            let (c, k) = evals::scoring::encode_pair(
                tok,
                req["context"].as_str().unwrap(),
                req["continuation"].as_str().unwrap(),
            )
            .unwrap();
            spans.push((
                c.len(),
                k.len(),
                req["loglik"].as_f64().unwrap(),
                req["greedy"].as_bool().unwrap(),
            ));
            seqs.push([c, k].concat());
        }
    }
    let refs = reference(&gguf, &seqs);

    let first = ctx / 2;
    let mut nll = Vec::new();
    let mut running = Vec::new();
    for (lp, _) in &refs[..chunks] {
        // logprob[i] predicts token i+1: positions first..ctx−2 predict first+1..ctx−1.
        nll.extend(lp[first..ctx - 1].iter().map(|x| -x));
        running.push((nll.iter().sum::<f64>() / nll.len() as f64).exp());
    }
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|x| x * x).sum::<f64>() / n - mean * mean;
    let (want, want_err) = (mean.exp(), mean.exp() * (var / (n - 1.0)).sqrt());
    assert_eq!(
        ppl["tokens_scored"].as_u64().unwrap() as usize,
        chunks * (ctx - 1 - first)
    );
    let (got, got_err) = (
        ppl["ppl"]["value"].as_f64().unwrap(),
        ppl["ppl"]["stderr"].as_f64().unwrap(),
    );
    eprintln!("ppl {got} ± {got_err} vs float64 reference {want} ± {want_err}");
    assert!((got / want - 1.0).abs() < 1e-4, "{got} vs {want}");
    assert!(
        (got_err / want_err - 1.0).abs() < 1e-3,
        "{got_err} vs {want_err}"
    );
    for (g, w) in ppl["running"].as_array().unwrap().iter().zip(&running) {
        assert!((g.as_f64().unwrap() / w - 1.0).abs() < 1e-4);
    }

    for ((ctx, cont, got, greedy), (lp, g)) in spans.iter().zip(&refs[chunks..]) {
        let want: f64 = lp[ctx - 1..ctx - 1 + cont].iter().sum();
        assert!(
            (got - want).abs() < 2e-3 * (*cont as f64).max(1.0),
            "{got} vs {want}"
        );
        assert_eq!(*greedy, g[ctx - 1..ctx - 1 + cont].iter().all(|x| *x));
    }
    // acc from the logged log-likelihoods, as lm-eval decides it.
    for s in &lines {
        let lls: Vec<f64> = s["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["loglik"].as_f64().unwrap())
            .collect();
        let best = (0..lls.len()).fold(0, |b, i| if lls[i] > lls[b] { i } else { b });
        if lls.len() > 1 {
            assert_eq!(
                s["acc"].as_bool().unwrap(),
                best as u64 == s["gold"].as_u64().unwrap()
            );
        }
    }
}

#[test]
fn kld_against_itself_is_zero_and_saved_records_reproduce_the_run() {
    let text = wiki_prefix(6000);
    let gguf = smollm_gguf();
    let (g, t) = (gguf.to_str().unwrap(), text.to_str().unwrap());
    let base_file = scratch().join("base.qzlp");
    let same = ok(run(&[
        "kld",
        "--base",
        g,
        "-m",
        g,
        "-f",
        t,
        "--ctx",
        "64",
        "--chunks",
        "2",
        "--save-base",
        base_file.to_str().unwrap(),
        "--json",
    ]));
    // Not exactly 0: the base's log-probabilities are stored as f32.
    assert!(
        same["kld"]["value"].as_f64().unwrap() < 1e-7,
        "{}",
        same["kld"]
    );
    assert_eq!(same["top1"]["value"].as_f64().unwrap(), 1.0);
    assert!((same["ppl_ratio"]["value"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(same["tokens_scored"], 2 * 31);

    // The bf16 folder: a slightly different model with the same vocabulary from tokenizer.json.
    let folder = bf16_folder().to_str().unwrap();
    let live = ok(run(&[
        "kld", "--base", g, "-m", folder, "-f", t, "--ctx", "64", "--chunks", "2", "--json",
    ]));
    let saved = ok(run(&[
        "kld",
        "--base-logits",
        base_file.to_str().unwrap(),
        "-m",
        folder,
        "--json",
    ]));
    for k in [
        "kld",
        "top1",
        "ppl",
        "ppl_base",
        "delta_p",
        "kld_distribution",
    ] {
        assert_eq!(live[k], saved[k], "{k}");
    }
    let kld = live["kld"]["value"].as_f64().unwrap();
    assert!(kld > 0.0 && kld < 0.01, "{kld}");
    // Keeping every base token gives the exact divergence; the default records are a lower bound
    // within their tail mass.
    let exact = ok(run(&[
        "kld",
        "--base",
        g,
        "-m",
        folder,
        "-f",
        t,
        "--ctx",
        "64",
        "--chunks",
        "2",
        "--tail-mass",
        "0",
        "--max-top",
        "49152",
        "--json",
    ]));
    let full = exact["kld"]["value"].as_f64().unwrap();
    eprintln!("bf16 folder vs GGUF: mean KLD {kld:.3e} (default records), {full:.3e} (all tokens)");
    assert!(
        kld <= full * (1.0 + 1e-6) && kld > full * 0.98,
        "{kld} vs {full}"
    );
    // Compact: far below llama.cpp's 2 bytes per vocabulary entry and position.
    let bytes = std::fs::metadata(&base_file).unwrap().len() as f64;
    assert!(bytes / 62.0 < 0.5 * 2.0 * 49152.0, "{bytes} bytes");
}

#[test]
fn kld_refuses_a_different_tokenizer_and_bad_base_files() {
    let text = wiki_prefix(6000);
    let gguf = smollm_gguf();
    let (g, t) = (gguf.to_str().unwrap(), text.to_str().unwrap());
    // The folder with one vocabulary entry renamed.
    let other = scratch().join("other-tokenizer");
    std::fs::create_dir_all(&other).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        let _ = std::fs::remove_file(other.join(f));
        std::os::unix::fs::symlink(bf16_folder().join(f), other.join(f)).unwrap();
    }
    let mut tj: Value = serde_json::from_str(
        &std::fs::read_to_string(bf16_folder().join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    // Swap the ids of two tokens: merges (by string) stay valid, ids no longer mean the same.
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    let (id, other_id) = (vocab["the"].clone(), vocab["The"].clone());
    vocab.insert("the".into(), other_id.clone());
    vocab.insert("The".into(), id.clone());
    std::fs::write(other.join("tokenizer.json"), tj.to_string()).unwrap();
    let o = run(&[
        "kld",
        "--base",
        g,
        "-m",
        other.to_str().unwrap(),
        "-f",
        t,
        "--ctx",
        "64",
        "--chunks",
        "1",
    ]);
    let first = id.as_u64().unwrap().min(other_id.as_u64().unwrap());
    assert_clean_failure(
        &o,
        &[
            "different tokenizers",
            &format!("token {first} is"),
            "\"the\"",
            "\"The\"",
        ],
    );

    // A saved base used with a text it was not computed on.
    let base_file = scratch().join("base-other.qzlp");
    let o = run(&[
        "kld",
        "--base",
        g,
        "-f",
        t,
        "--ctx",
        "64",
        "--chunks",
        "1",
        "--save-base",
        base_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let moby = scratch().join("moby.txt");
    let m: String = std::fs::read_to_string(assets().join("text/moby-dick.txt"))
        .unwrap()
        .chars()
        .take(5000)
        .collect();
    std::fs::write(&moby, m).unwrap();
    let o = run(&[
        "kld",
        "--base-logits",
        base_file.to_str().unwrap(),
        "-m",
        g,
        "-f",
        moby.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["tokenizes differently"]);

    // Corrupt, truncated, and not-such files.
    let bytes = std::fs::read(&base_file).unwrap();
    let bad = scratch().join("bad.qzlp");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x10;
    for (data, needle) in [
        (&flipped[..], "checksum"),
        (&bytes[..bytes.len() / 2], "checksum"),
        (
            &std::fs::read(&gguf).unwrap()[..4096],
            "not a base log-probability file",
        ),
    ] {
        std::fs::write(&bad, data).unwrap();
        let o = run(&["kld", "--base-logits", bad.to_str().unwrap(), "-m", g]);
        assert_clean_failure(&o, &[needle, "bad.qzlp"]);
    }
}

#[test]
fn bad_inputs_fail_clearly() {
    let g = smollm_gguf();
    let g = g.to_str().unwrap();
    let short = wiki_prefix(1500);
    let o = run(&["ppl", "-m", g, "-f", short.to_str().unwrap()]);
    assert_clean_failure(&o, &["wiki-1500.txt", "tokens", "at least 1024"]);
    let o = run(&["kld", "--base", g, "-m", g, "-f", short.to_str().unwrap()]);
    assert_clean_failure(&o, &["at least 1024"]);
    let o = run(&[
        "eval",
        "-m",
        g,
        "--tasks",
        "arc_easy,hellaswag_pro",
        "--limit",
        "1",
    ]);
    assert_clean_failure(&o, &["unknown task \"hellaswag_pro\"", "arc_easy"]);
    let o = run(&["eval", "-m", g, "--tasks", "mmlu_astrology", "--limit", "1"]);
    assert_clean_failure(&o, &["mmlu_astrology", "abstract_algebra"]);
    let bad = scratch().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n",
    )
    .unwrap();
    let o = run(&["eval", "-m", g, "--tasks", bad.to_str().unwrap()]);
    assert_clean_failure(&o, &["bad.jsonl", "line 1", "fewer than two choices"]);
    let o = run(&["ppl", "-m", g, "-f", "/nonexistent/text.txt"]);
    assert_clean_failure(&o, &["/nonexistent/text.txt"]);
}

fn policy(name: &str, extra: &str) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(
        &p,
        format!(
            "[data]\ntext = \"{}\"\nctx = 64\nchunks = 2\ntasks = [\"arc_easy\"]\nlimit = 2\n{extra}",
            wiki_prefix(6000).display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn gate_passes_a_faithful_candidate_and_fails_on_a_strict_policy() {
    let g = smollm_gguf();
    let g = g.to_str().unwrap();
    let out = scratch().join("gate-pass");
    let p = policy("pass.toml", "[formats.BF16]\nmax_mean_kld = 0.01\n");
    let o = run(&[
        "gate",
        "--base",
        g,
        "--candidate",
        g,
        "--candidate",
        bf16_folder().to_str().unwrap(),
        "--policy",
        p.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["pass"], true);
    let cands = report["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 2);
    // A GGUF is named by its llama.cpp file type, a folder by its weights' format.
    assert_eq!(cands[0]["candidate"]["format"], "Q4_1");
    assert_eq!(cands[1]["candidate"]["format"], "BF16");
    assert_eq!(cands[1]["override_key"], "BF16");
    assert_eq!(cands[1]["thresholds"]["max_mean_kld"], 0.01);
    let metrics: Vec<&str> = cands[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["ppl", "kld", "top1", "accuracy"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("# Quality gate: PASS") && md.contains("## Mean KL divergence"));
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.trim_end().ends_with("</svg>")
            && svg.matches("<circle").count() == 6
    );

    let out = scratch().join("gate-fail");
    let p = policy("fail.toml", "[thresholds]\nmax_mean_kld = 0.0\n");
    let o = run(&[
        "gate",
        "--base",
        g,
        "--candidate",
        bf16_folder().to_str().unwrap(),
        "--policy",
        p.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tasks",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("FAIL") && stderr(&o).contains("mean KL divergence"),
        "{}",
        stderr(&o)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["pass"], false);
    let o = run(&[
        "gate",
        "--base",
        g,
        "--candidate",
        g,
        "--policy",
        "/nonexistent/gate.toml",
    ]);
    assert_clean_failure(&o, &["/nonexistent/gate.toml"]);
}

#[test]
fn concurrent_scoring_equals_sequential() {
    let g = smollm_gguf();
    let g = g.to_str().unwrap();
    let with = |c: &str, name: &str| {
        samples(
            &[
                "eval",
                "-m",
                g,
                "--tasks",
                "arc_easy,winogrande",
                "--limit",
                "3",
                "--concurrency",
                c,
            ],
            name,
        )
        .1
    };
    let (one, three) = (with("1", "seq.jsonl"), with("3", "par.jsonl"));
    assert_eq!((one.len(), three.len()), (6, 6));
    for (x, y) in one.iter().zip(&three) {
        for (r, s) in x["requests"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["requests"].as_array().unwrap())
        {
            assert_eq!(r["context"], s["context"]);
            assert!((r["loglik"].as_f64().unwrap() - s["loglik"].as_f64().unwrap()).abs() < 1e-4);
        }
    }
}
