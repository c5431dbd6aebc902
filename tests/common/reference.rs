//! The runtime's logits on the real SmolLM2 GGUF against the independent float64 NumPy forward
//! pass (tests/oracle/llama_ref.py, weights decoded by gguf-py).

pub const PROMPTS: [&str; 6] = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "In 1969, Neil Armstrong became the first person to",
    "Photosynthesis converts light energy into chemical energy stored in",
    "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money",
];

pub struct Comparison {
    pub positions: usize,
    pub agree: usize,
    pub max_diff: f64,
    pub mean_diff: f64,
}

/// Runs the runtime and the oracle on the prompts and compares every position's logits.
pub fn compare_with_reference() -> Comparison {
    let path = super::smollm_gguf();
    let model = runtime::load(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let tokens_json = dir.path().join("tokens.json");
    let ref_json = dir.path().join("ref.json");
    std::fs::write(&tokens_json, serde_json::to_string(&prompts).unwrap()).unwrap();
    let out = super::python()
        .arg(super::oracle("llama_ref.py"))
        .args([&path, &tokens_json, &ref_json])
        .output()
        .expect("python runs (set QUANTIZE_PYTHON to an interpreter with numpy and gguf)");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        super::stderr(&out)
    );
    let reference: Vec<Vec<Vec<f64>>> =
        serde_json::from_str(&std::fs::read_to_string(&ref_json).unwrap()).unwrap();

    let vocab = model.output.rows();
    let (mut positions, mut agree, mut max_diff, mut sum_diff, mut n) =
        (0usize, 0usize, 0f64, 0f64, 0usize);
    for (toks, want) in prompts.iter().zip(&reference) {
        let mut cache = model.new_cache();
        let got = model.forward(toks, &mut cache, 0);
        assert_eq!(want.len(), toks.len());
        for (t, w) in want.iter().enumerate() {
            let g = &got[t * vocab..(t + 1) * vocab];
            let top = |v: &mut dyn Iterator<Item = f64>| {
                v.enumerate()
                    .fold((0, f64::MIN), |b, (i, x)| if x > b.1 { (i, x) } else { b })
                    .0
            };
            positions += 1;
            agree +=
                (top(&mut g.iter().map(|x| *x as f64)) == top(&mut w.iter().copied())) as usize;
            for (a, b) in g.iter().zip(w) {
                let d = (*a as f64 - b).abs();
                max_diff = max_diff.max(d);
                sum_diff += d;
                n += 1;
            }
        }
    }
    Comparison {
        positions,
        agree,
        max_diff,
        mean_diff: sum_diff / n as f64,
    }
}

/// The float64 reference's logits (tests/oracle/llama_ref.py) of every position of each token
/// list, for a GGUF file or a Hugging Face folder.
pub fn reference_logits(model: &std::path::Path, tokens: &[Vec<u32>]) -> Vec<Vec<Vec<f64>>> {
    let tmp = tempfile::tempdir().unwrap();
    let (tj, rj) = (tmp.path().join("t.json"), tmp.path().join("r.json"));
    std::fs::write(&tj, serde_json::to_string(tokens).unwrap()).unwrap();
    let out = super::python()
        .arg(super::oracle("llama_ref.py"))
        .args([model, &tj, &rj])
        .output()
        .unwrap();
    assert!(out.status.success(), "oracle: {}", super::stderr(&out));
    serde_json::from_str(&std::fs::read_to_string(&rj).unwrap()).unwrap()
}
