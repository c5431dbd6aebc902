//! `quantize convert` output loads in Hugging Face transformers, and transformers' logits on it
//! agree with the runtime's on the same folder. Needs torch + transformers (~5 GB), so it is not
//! part of CI: run with `QUANTIZE_PEER_PYTHON=/path/to/python cargo test --release --test
//! transformers_parity -- --ignored --nocapture`.

mod common;

#[test]
#[ignore = "needs torch and transformers: set QUANTIZE_PEER_PYTHON and run with --ignored"]
fn converted_folder_matches_transformers() {
    let py = std::env::var("QUANTIZE_PEER_PYTHON")
        .expect("QUANTIZE_PEER_PYTHON names a python with torch");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("smollm2-bf16");
    let conv = common::quantize(&[
        "convert",
        "--model",
        common::smollm_gguf().to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
    ]);
    assert!(conv.status.success(), "{}", common::stderr(&conv));

    let model = runtime::load(&folder).unwrap();
    let tok = model.tokenizer().unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "def fibonacci(n):\n    if n < 2:\n        return n",
        "In 1969, Neil Armstrong became the first person to",
        "Photosynthesis converts light energy into chemical energy stored in",
        "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
        "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money",
    ]
    .iter()
    .map(|p| tok.encode(p, true).unwrap())
    .collect();
    let tokens = dir.path().join("tokens.json");
    let reference = dir.path().join("hf.json");
    std::fs::write(&tokens, serde_json::to_string(&prompts).unwrap()).unwrap();
    let out = std::process::Command::new(py)
        .arg(common::oracle("hf_logits.py"))
        .args([&folder, &tokens, &reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transformers failed: {}",
        common::stderr(&out)
    );
    let want: Vec<Vec<Vec<f64>>> =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();

    let vocab = model.output.rows();
    let (mut n, mut agree, mut max_diff) = (0usize, 0usize, 0f64);
    for (toks, w) in prompts.iter().zip(&want) {
        let got = model.forward(toks, &mut model.new_cache(), 0);
        for (t, wr) in w.iter().enumerate() {
            let g = &got[t * vocab..(t + 1) * vocab];
            let argmax = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .fold(
                        (0, f64::MIN),
                        |b, (i, x)| if *x > b.1 { (i, *x) } else { b },
                    )
                    .0
            };
            let g64: Vec<f64> = g.iter().map(|x| *x as f64).collect();
            n += 1;
            agree += (argmax(&g64) == argmax(wr)) as usize;
            max_diff = g64
                .iter()
                .zip(wr)
                .fold(max_diff, |m, (a, b)| m.max((a - b).abs()));
        }
    }
    eprintln!("runtime vs transformers on the converted folder: {n} positions, top-1 agreement {agree}/{n}, max |Δlogit| {max_diff:.5}");
    assert!(max_diff < 1e-2, "max |Δlogit| {max_diff}");
    assert_eq!(agree, n);
}
