//! `quantize awq`: activation-aware 4-bit weight quantization (or round-to-nearest) to an
//! AutoAWQ GEMM folder that transformers and vLLM load.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use calib::awq::AwqQuantizer;
use quant::awq::AwqConfig;
use quant::groupq::{quantize_rtn, FitRule};
use quant::hf::ModelCard;

use super::calib_args::CalibArgs;
use super::gptq::model_name;
use super::group_quant_out::{check_group_size, command_line, Artifact};
use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face folder or GGUF file (full precision).
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[command(flatten)]
    calib: CalibArgs,
    /// Input columns per group.
    #[arg(long, default_value_t = 128)]
    group_size: usize,
    #[arg(long, value_enum, default_value_t = Method::Awq)]
    method: Method,
    /// Samples that run the module losses of the scale searches (evenly spaced; 0 = all). The
    /// activation statistics and the single-linear losses always use every sample.
    #[arg(long, default_value_t = 0)]
    search_samples: usize,
    /// Output folder (written atomically).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Largest safetensors shard (K/M/G suffixes).
    #[arg(long, default_value = "5G", value_parser = super::parse_size)]
    max_shard_size: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// Scale search and clipping on the calibration set.
    Awq,
    /// Round to nearest with AWQ's zero-point quantizer: no calibration.
    Rtn,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let g = a.group_size;
    anyhow::ensure!(g > 0, "--group-size must be positive");
    let model = load_model(&a.model)?;
    check_group_size(&model, g)?;
    if let Some((i, l)) = model.layers.iter().enumerate().find(|(_, l)| {
        runtime::model::LinearKind::ALL
            .iter()
            .any(|k| l.linear(*k).w.rows() % 8 != 0)
    }) {
        anyhow::bail!(
            "model.layers.{i}: AWQ GEMM needs output features in multiples of 8 ({:?})",
            l.q.w.rows()
        );
    }
    let shapes = move |rows: usize, cols: usize| quant::hf::awq::tensor_shapes(rows, cols, g);
    let mut artifact = Artifact::create(
        &model,
        &a.out,
        &shapes,
        quant::hf::awq::pack,
        a.max_shard_size,
    )?;
    let cfg = AwqConfig {
        group_size: g,
        ..AwqConfig::default()
    };
    let bar = super::progress(model.layers.len(), "blocks");
    let mut sink = |i, layer: &_, q| {
        let r = artifact.block(i, layer, q);
        bar.inc(1);
        r
    };
    let (method_line, calib_line) = match a.method {
        Method::Rtn => {
            calib::pipeline::run_uncalibrated(
                &model,
                |_, w, rows, cols| quantize_rtn(w, rows, cols, 4, g, FitRule::Awq),
                &mut sink,
            )?;
            ("round to nearest".to_string(), None)
        }
        Method::Awq => {
            let set = a.calib.load(&model)?;
            let mut q = AwqQuantizer::new(cfg, a.search_samples);
            calib::pipeline::run(&model, &set.samples, &mut q, &mut sink)?;
            let unscaled = q.report.iter().filter(|r| r.best == 0).count();
            tracing::info!(
                "{} scale searches, {unscaled} kept no scaling",
                q.report.len()
            );
            (
                "AWQ (scale search and clipping)".to_string(),
                Some(format!(
                    "{} samples × {} tokens",
                    set.samples.len(),
                    a.calib.seqlen
                )),
            )
        }
    };
    bar.finish_and_clear();
    let desc = format!("{method_line}, 4-bit, group {g}, zero point");
    let mut settings = vec![
        ("bits".into(), "4".into()),
        ("group_size".into(), g.to_string()),
        ("zero_point".into(), "true".into()),
        ("version".into(), "gemm".into()),
        ("method".into(), method_line.clone()),
    ];
    if let Some(c) = &calib_line {
        settings.push(("calibration".into(), c.clone()));
    }
    let card = ModelCard {
        title: format!("{} — AWQ 4-bit", model_name(&a.model)),
        base_model: a.model.display().to_string(),
        method: format!("Quantized with quantize: {desc}."),
        format: "AutoAWQ GEMM (qweight/qzeros/scales, float16): transformers (AwqConfig) and \
                 vLLM (awq, awq_marlin) load it"
            .into(),
        tags: vec!["awq".into(), "4-bit".into()],
        settings,
        command: command_line(),
        quality: vec![],
    };
    let out = artifact
        .finish(
            &model,
            &a.model,
            quant::hf::awq::quantization_config(g),
            &[],
            &card,
        )
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {} ({desc}; {} blocks) in {:.1} s",
        out.display(),
        model.layers.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
