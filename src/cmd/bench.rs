//! `quantize bench`: prompt-processing and generation throughput, measured as llama-bench
//! measures them (see `runtime::bench`), so the two tools' tables compare line by line.

use std::path::PathBuf;

use anyhow::ensure;
use runtime::bench::{self, BenchTest};
use serde::Serialize;

use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face folder.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Prompt tokens of the pp test (0: skip it).
    #[arg(long, short = 'p', default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens of the tg test (0: skip it).
    #[arg(long, short = 'n', default_value_t = 128)]
    n_gen: usize,
    /// Timed repetitions of each test, after one warm-up run.
    #[arg(long, short = 'r', default_value_t = 5)]
    repetitions: usize,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    model: String,
    /// The SIMD extensions the kernels use.
    cpu: String,
    model_type: String,
    model_size: usize,
    model_n_params: usize,
    n_threads: usize,
    test: String,
    n_prompt: usize,
    n_gen: usize,
    avg_ns: f64,
    stddev_ns: f64,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ns: Vec<u64>,
    samples_ts: Vec<f64>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    ensure!(a.repetitions > 0, "--repetitions must be at least 1");
    let model = load_model(&a.model)?;
    let model_type = model_type(&model);
    let tests = [
        (a.n_prompt > 0).then_some(BenchTest::Prompt(a.n_prompt)),
        (a.n_gen > 0).then_some(BenchTest::Generate(a.n_gen)),
    ];
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    if !a.json {
        println!("| model | size | params | threads | test | t/s |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    }
    for test in tests.into_iter().flatten() {
        let r = bench::run(&model, test, a.repetitions, a.seed);
        let (n_prompt, n_gen) = match test {
            BenchTest::Prompt(n) => (n, 0),
            BenchTest::Generate(n) => (0, n),
        };
        let row = Row {
            model: model.source.clone(),
            cpu: kernels::cpu::features().summary(),
            model_type: model_type.clone(),
            model_size: model.storage_bytes(),
            model_n_params: model.n_params(),
            n_threads: threads,
            test: test.label(),
            n_prompt,
            n_gen,
            avg_ns: r.avg_ns(),
            stddev_ns: r.stddev_ns(),
            avg_ts: r.avg_ts(),
            stddev_ts: r.stddev_ts(),
            samples_ns: r.samples_ns.clone(),
            samples_ts: r.samples_ts(),
        };
        if !a.json {
            println!(
                "| {} | {:.2} MiB | {:.2} M | {} | {} | {:.2} ± {:.2} |",
                row.model_type,
                row.model_size as f64 / (1 << 20) as f64,
                row.model_n_params as f64 / 1e6,
                row.n_threads,
                row.test,
                row.avg_ts,
                row.stddev_ts
            );
        }
        rows.push(row);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// The weight types of the model's linears and head, most common first ("Q5_0 166, Q8_0 14").
fn model_type(model: &runtime::Model) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let matrices = model
        .layers
        .iter()
        .flat_map(|l| runtime::model::LinearKind::ALL.map(|k| l.linear(k).w.clone()))
        .chain([model.output.clone()]);
    for m in matrices {
        let f = m.format();
        match counts.iter_mut().find(|(n, _)| *n == f) {
            Some((_, c)) => *c += 1,
            None => counts.push((f, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
