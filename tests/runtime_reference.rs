//! The runtime's logits on the real SmolLM2 GGUF against an independent float64 NumPy forward
//! pass (tests/oracle/llama_ref.py, weights decoded by gguf-py).

mod common;

const PROMPTS: [&str; 6] = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "In 1969, Neil Armstrong became the first person to",
    "Photosynthesis converts light energy into chemical energy stored in",
    "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money",
];

#[test]
fn logits_match_an_independent_float64_implementation() {
    let path = common::smollm_gguf();
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
    let out = common::python()
        .arg(common::oracle("llama_ref.py"))
        .args([&path, &tokens_json, &ref_json])
        .output()
        .expect("python runs (set QUANTIZE_PYTHON to an interpreter with numpy and gguf)");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        common::stderr(&out)
    );
    let reference: Vec<Vec<Vec<f64>>> =
        serde_json::from_str(&std::fs::read_to_string(&ref_json).unwrap()).unwrap();

    let vocab = model.output.rows();
    let (mut positions, mut agree, mut max_diff) = (0usize, 0usize, 0f64);
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
                max_diff = max_diff.max((*a as f64 - b).abs());
            }
        }
    }
    eprintln!(
        "runtime vs float64 reference: {} prompts, {positions} positions, top-1 agreement {agree}/{positions}, max |Δlogit| {max_diff:.5}",
        prompts.len()
    );
    // f32 activations through 30 layers against float64 measured 4e-5; a wrong RoPE, norm,
    // permutation or GQA mapping moves logits by whole units.
    assert!(max_diff < 1e-3, "max |Δlogit| {max_diff}");
    assert!(
        agree * 100 >= positions * 98,
        "top-1 agreement {agree}/{positions}"
    );
}
