//! `quantize inspect --json` against gguf-py's reading of the same file, and on a folder.

mod common;

#[test]
fn inspect_lists_what_gguf_py_reads() {
    let path = common::smollm_gguf();
    let o = common::quantize(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let ours: serde_json::Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    let r = common::python()
        .arg(common::oracle("gguf_list.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", common::stderr(&r));
    let want: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();

    let ours_t = ours["tensors"].as_array().unwrap();
    let want_t = want["tensors"].as_array().unwrap();
    assert_eq!(ours_t.len(), want_t.len());
    for (a, b) in ours_t.iter().zip(want_t) {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["type"], b["type"], "{}", a["name"]);
        assert_eq!(a["shape"], b["shape"], "{}", a["name"]);
    }
    let mut keys: Vec<&str> = ours["metadata"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want_keys: Vec<&str> = want["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort();
    want_keys.sort();
    assert_eq!(keys, want_keys);
    // Bits per weight of the whole file's tensor data, from the sizes gguf-py reports.
    let bytes = std::fs::metadata(&path).unwrap().len() as f64;
    let bpw = ours["bits_per_weight"].as_f64().unwrap();
    let n = ours["n_elements"].as_f64().unwrap();
    assert!(
        bpw * n / 8.0 <= bytes && bpw * n / 8.0 > 0.9 * bytes,
        "bpw {bpw} inconsistent with file size"
    );
}

#[test]
fn inspect_reads_folders_and_rejects_non_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    let o = common::quantize(&[
        "convert",
        "-m",
        common::smollm_gguf().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = common::quantize(&["inspect", "--json", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(v["types"]["BF16"], 272);
    assert_eq!(v["bits_per_weight"], 16.0);

    let o = common::quantize(&["inspect", dir.path().to_str().unwrap()]);
    common::assert_clean_failure(&o, &["config.json"]);
}
