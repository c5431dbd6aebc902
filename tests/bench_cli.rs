//! `quantize bench --json` on the real model: one row per test with llama-bench's fields, whose
//! rates follow from the recorded samples by llama-bench's definitions (mean and sample standard
//! deviation of the per-repetition tokens/s); bad arguments fail cleanly. No speed is asserted.

mod common;

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (m, var.sqrt())
}

#[test]
fn bench_reports_each_test_by_llama_bench_definitions() {
    let model = common::smollm_gguf();
    let o = common::quantize(&[
        "-t",
        "2",
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (test, n_prompt, n_gen)) in rows.iter().zip([("pp16", 16, 0), ("tg4", 0, 4)]) {
        assert_eq!(row["test"], test);
        assert_eq!(row["n_prompt"], n_prompt);
        assert_eq!(row["n_gen"], n_gen);
        assert_eq!(row["n_threads"], 2);
        assert_eq!(row["model_n_params"].as_u64().unwrap() / 1_000_000, 134);
        let ns: Vec<f64> = row["samples_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ns.len(), 3);
        let ts: Vec<f64> = ns
            .iter()
            .map(|n| 1e9 * (n_prompt + n_gen) as f64 / n)
            .collect();
        let (m, sd) = mean_sd(&ts);
        let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() <= 1e-9 * b;
        assert!(close(&row["avg_ts"], m), "{row}");
        assert!(close(&row["stddev_ts"], sd), "{row}");
        assert!(close(&row["avg_ns"], mean_sd(&ns).0), "{row}");
    }
}

#[test]
fn bench_rejects_bad_arguments() {
    let model = common::smollm_gguf();
    let o = common::quantize(&["bench", "-m", model.to_str().unwrap(), "-r", "0"]);
    common::assert_clean_failure(&o, &["--repetitions"]);
    let o = common::quantize(&["bench", "-m", "/nonexistent/model.gguf"]);
    common::assert_clean_failure(&o, &["/nonexistent/model.gguf"]);
}
