//! What `quantize fp8` and `quantize int8` share: calibration statistics with progress, the
//! conversion with progress, the model card and the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use calib::compressed::{convert, needs_stats, sites_used, CompressedOptions};
use calib::stats::InputSite;
use calib::ActivationStats;
use indicatif::{ProgressBar, ProgressStyle};
use quant::hf::ModelCard;

use super::calib_args::CalibArgs;

fn bar(n: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(n as u64);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_owned());
    b
}

/// Runs the calibration samples through the full-precision model and returns the statistics of
/// the linear inputs at `sites`.
pub fn calibrate(
    model: &runtime::Model,
    args: &CalibArgs,
    sites: &[InputSite],
) -> anyhow::Result<ActivationStats> {
    let set = args.load(model)?;
    let b = bar(model.layers.len(), "calibrating");
    let stats =
        calib::stats::collect_blockwise(model, &set.samples, sites, |n| b.set_position(n as u64))?;
    b.finish_and_clear();
    Ok(stats)
}

pub struct Job<'a> {
    pub model_path: &'a Path,
    pub out: &'a Path,
    pub opts: CompressedOptions,
    pub calib: &'a CalibArgs,
    pub title: String,
    pub method: String,
    pub settings: Vec<(String, String)>,
}

/// Loads the model, calibrates when the scheme needs it, converts, and reports.
pub fn run(job: Job) -> anyhow::Result<PathBuf> {
    let t0 = Instant::now();
    let model = super::load_model(job.model_path)?;
    let stats = if needs_stats(&job.opts) {
        Some(calibrate(&model, job.calib, &sites_used(&job.opts))?)
    } else {
        None
    };
    let mut settings = job.settings;
    if stats.is_some() {
        settings.extend([
            ("calibration".into(), job.calib.path().display().to_string()),
            (
                "samples".into(),
                format!(
                    "{} × {} tokens, seed {}",
                    job.calib.nsamples, job.calib.seqlen, job.calib.seed
                ),
            ),
        ]);
    }
    let format = job.opts.scheme.format().name();
    let card = ModelCard {
        title: job.title,
        base_model: job.model_path.display().to_string(),
        method: job.method,
        format: format!(
            "compressed-tensors ({format}), as llm-compressor writes it: loads in vLLM, in transformers with compressed-tensors, and in quantize"
        ),
        tags: vec!["compressed-tensors".into(), format.into()],
        settings,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quality: vec![],
    };
    let b = bar(model.layers.len(), "quantizing");
    let source = job.model_path.is_dir().then_some(job.model_path);
    let done = convert(
        &model,
        source,
        job.out,
        &job.opts,
        stats.as_ref(),
        &card,
        |n| b.set_position(n as u64),
    )
    .with_context(|| format!("writing {}", job.out.display()))?;
    b.finish_and_clear();
    for n in &done.notes {
        eprintln!("note: {n}");
    }
    eprintln!(
        "wrote {} ({}, {} blocks, {:.1} s)",
        done.out.display(),
        format,
        model.layers.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(done.out)
}
