//! `quantize gptq`: GPTQ (or round-to-nearest) weight quantization to a GPTQ folder that
//! transformers and vLLM load.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use calib::gptq::GptqQuantizer;
use quant::gptq::GptqConfig;
use quant::groupq::{quantize_rtn, FitRule};
use quant::hf::gptq::GptqSettings;
use quant::hf::ModelCard;

use super::calib_args::CalibArgs;
use super::group_quant_out::{check_group_size, command_line, Artifact};
use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face folder or GGUF file (full precision).
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[command(flatten)]
    calib: CalibArgs,
    /// Bits per weight.
    #[arg(long, default_value_t = 4, value_parser = parse_bits)]
    bits: u32,
    /// Input columns per group; -1 for one group per output row.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    group_size: i64,
    /// Quantize columns in order of decreasing Hessian diagonal (desc_act; writes g_idx).
    #[arg(long)]
    act_order: bool,
    /// Fit every group on the original weights before the solve (with --act-order: groups stay
    /// contiguous, so kernels need no reordering).
    #[arg(long)]
    static_groups: bool,
    /// Symmetric quantization (the default; what vLLM's Marlin kernels take).
    #[arg(long, conflicts_with = "asym")]
    sym: bool,
    /// Asymmetric quantization (a zero point per group).
    #[arg(long)]
    asym: bool,
    /// Dampening of the Hessian diagonal, as a fraction of its mean (raised automatically when
    /// the Cholesky factorization fails).
    #[arg(long, default_value_t = 0.01)]
    damp: f64,
    #[arg(long, value_enum, default_value_t = Method::Gptq)]
    method: Method,
    /// Output folder (written atomically).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Largest safetensors shard (K/M/G suffixes).
    #[arg(long, default_value = "5G", value_parser = super::parse_size)]
    max_shard_size: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// GPTQ with the calibration set's Hessians.
    Gptq,
    /// Round to nearest: no calibration.
    Rtn,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let group = match a.group_size {
        -1 => None,
        g if g > 0 => Some(g as usize),
        g => anyhow::bail!("--group-size {g}: a positive number of columns, or -1"),
    };
    let model = load_model(&a.model)?;
    if let Some(g) = group {
        check_group_size(&model, g)?;
    }
    let sym = !a.asym;
    let settings = GptqSettings {
        bits: a.bits,
        group_size: group,
        sym,
        desc_act: a.act_order,
        static_groups: a.static_groups,
        damp_percent: a.damp,
        true_sequential: true,
    };
    let bits = a.bits;
    let shapes = move |rows: usize, cols: usize| {
        quant::hf::gptq::tensor_shapes(rows, cols, bits, group.unwrap_or(cols))
    };
    let mut artifact = Artifact::create(
        &model,
        &a.out,
        &shapes,
        quant::hf::gptq::pack,
        a.max_shard_size,
    )?;
    let cfg = GptqConfig {
        bits: a.bits,
        group_size: group.unwrap_or(0),
        sym,
        act_order: a.act_order,
        static_groups: a.static_groups,
        damp: a.damp,
        ..GptqConfig::default()
    };
    let bar = super::progress(model.layers.len(), "blocks");
    let mut sink = |i, layer: &_, q| {
        let r = artifact.block(i, layer, q);
        bar.inc(1);
        r
    };
    let (method_line, calib_line) = match a.method {
        Method::Rtn => {
            let rule = FitRule::Gptq { sym };
            calib::pipeline::run_uncalibrated(
                &model,
                |_, w, rows, cols| quantize_rtn(w, rows, cols, bits, group.unwrap_or(cols), rule),
                &mut sink,
            )?;
            ("round to nearest".to_string(), None)
        }
        Method::Gptq => {
            let set = a.calib.load(&model)?;
            let mut q = GptqQuantizer::new(cfg);
            calib::pipeline::run(&model, &set.samples, &mut q, &mut sink)?;
            let worst = q
                .report
                .iter()
                .max_by(|x, y| x.damp.total_cmp(&y.damp))
                .map_or(a.damp, |r| r.damp);
            if worst > a.damp {
                eprintln!("note: some Hessians needed dampening {worst} to factor");
            }
            (
                "GPTQ".to_string(),
                Some(format!(
                    "{} samples × {} tokens",
                    set.samples.len(),
                    a.calib.seqlen
                )),
            )
        }
    };
    bar.finish_and_clear();
    let group_name = group.map_or("per channel".to_string(), |g| format!("group {g}"));
    let desc = format!(
        "{method_line}, {bits}-bit, {group_name}, {}{}{}",
        if sym { "symmetric" } else { "asymmetric" },
        if a.act_order { ", act-order" } else { "" },
        if a.static_groups {
            ", static groups"
        } else {
            ""
        },
    );
    let mut settings_rows = vec![
        ("bits".into(), bits.to_string()),
        (
            "group_size".into(),
            group.map_or("-1".into(), |g| g.to_string()),
        ),
        ("sym".into(), sym.to_string()),
        ("desc_act".into(), a.act_order.to_string()),
        ("static_groups".into(), a.static_groups.to_string()),
        ("method".into(), method_line.clone()),
    ];
    if let Some(c) = &calib_line {
        settings_rows.push(("calibration".into(), c.clone()));
        settings_rows.push(("damp_percent".into(), a.damp.to_string()));
    }
    let card = ModelCard {
        title: format!("{} — GPTQ {bits}-bit", model_name(&a.model)),
        base_model: a.model.display().to_string(),
        method: format!("Quantized with quantize: {desc}."),
        format: "GPTQ (checkpoint_format \"gptq\"; qweight/qzeros/scales/g_idx, float16): \
                 transformers (with optimum or gptqmodel) and vLLM (gptq, gptq_marlin) load it"
            .into(),
        tags: vec!["gptq".into(), format!("{bits}-bit")],
        settings: settings_rows,
        command: command_line(),
        quality: vec![],
    };
    let qc = settings.quantization_config(concat!("quantize:", env!("CARGO_PKG_VERSION")));
    let out = artifact
        .finish(
            &model,
            &a.model,
            qc.clone(),
            &[("quantize_config.json", &qc)],
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

/// The last path component, for titles.
pub fn model_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn parse_bits(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(b) if quant::hf::gptq::BITS.contains(&b) => Ok(b),
        _ => Err(format!("{s:?}: GPTQ stores 2, 3, 4 or 8 bits")),
    }
}
