//! `quantize int8`: int8 weights (per channel) with per-token dynamic int8 activations (W8A8,
//! compressed-tensors' int-quantized), after SmoothQuant by default; or weight-only (W8A16,
//! pack-quantized).

use std::path::PathBuf;

use calib::compressed::CompressedOptions;
use quant::hf::compressed_tensors::Scheme;

use super::calib_args::CalibArgs;
use super::compressed::{run as convert, Job};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face folder or GGUF file to quantize.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Output folder (written atomically).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// SmoothQuant migration strength α in 0..=1 (default 0.5 for W8A8; weight-only models are
    /// smoothed only when this is given).
    #[arg(long, value_name = "ALPHA", conflicts_with = "no_smoothquant")]
    smoothquant: Option<f64>,
    /// Quantize without SmoothQuant (plain W8A8).
    #[arg(long)]
    no_smoothquant: bool,
    /// Weights only (W8A16): activations stay in the model's dtype.
    #[arg(long)]
    weights_only: bool,
    #[command(flatten)]
    calib: CalibArgs,
    /// Largest safetensors shard, in bytes with an optional K/M/G suffix.
    #[arg(long, default_value = "5G", value_parser = super::parse_size)]
    max_shard_size: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (scheme, name) = if a.weights_only {
        (Scheme::W8A16, "W8A16")
    } else {
        (Scheme::W8A8, "W8A8")
    };
    let alpha = match (a.weights_only, a.no_smoothquant) {
        (_, true) => None,
        (true, false) => a.smoothquant,
        (false, false) => Some(a.smoothquant.unwrap_or(0.5)),
    };
    if let Some(a) = alpha {
        anyhow::ensure!(
            (0.0..=1.0).contains(&a),
            "--smoothquant {a} is outside 0..=1"
        );
    }
    let smoothing = alpha.map_or("none".to_string(), |a| format!("SmoothQuant α {a}"));
    let method = match scheme {
        Scheme::W8A16 => "int8 weights with per-channel scales; activations unquantized.",
        _ => "int8 weights with per-channel scales; activations quantized to int8 per token at run time.",
    };
    convert(Job {
        model_path: &a.model,
        out: &a.out,
        opts: CompressedOptions {
            scheme,
            smoothquant: alpha,
            max_shard_bytes: a.max_shard_size,
        },
        calib: &a.calib,
        title: format!("{} {name}", super::model_name(&a.model)),
        method: format!("{method} Smoothing: {smoothing}."),
        settings: vec![
            ("scheme".into(), name.into()),
            ("smoothing".into(), smoothing),
        ],
    })?;
    Ok(())
}
