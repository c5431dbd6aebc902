//! `quantize fp8`: FP8 E4M3 weights in compressed-tensors' float-quantized format.

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
    /// dynamic: per-channel weights, per-token dynamic activations (llm-compressor FP8_DYNAMIC);
    /// static: per-tensor weights and calibrated per-tensor activation scales (FP8);
    /// block: 128×128 weight blocks, per-token groups of 128 (FP8_BLOCK).
    #[arg(long, value_enum, default_value_t = Fp8Scheme::Dynamic)]
    scheme: Fp8Scheme,
    #[command(flatten)]
    calib: CalibArgs,
    /// Largest safetensors shard, in bytes with an optional K/M/G suffix.
    #[arg(long, default_value = "5G", value_parser = super::parse_size)]
    max_shard_size: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fp8Scheme {
    Dynamic,
    Static,
    Block,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (scheme, name, method) = match a.scheme {
        Fp8Scheme::Dynamic => (
            Scheme::Fp8Dynamic,
            "FP8 dynamic",
            "FP8 E4M3 weights with per-channel scales; activations quantized per token at run time.",
        ),
        Fp8Scheme::Static => (
            Scheme::Fp8Static,
            "FP8 static",
            "FP8 E4M3 weights with per-tensor scales (shared by the linears vLLM fuses); activation scales per tensor from calibration.",
        ),
        Fp8Scheme::Block => (
            Scheme::Fp8Block,
            "FP8 block",
            "FP8 E4M3 weights with a scale per 128×128 block; activations quantized per token in groups of 128 at run time.",
        ),
    };
    convert(Job {
        model_path: &a.model,
        out: &a.out,
        opts: CompressedOptions {
            scheme,
            smoothquant: None,
            max_shard_bytes: a.max_shard_size,
        },
        calib: &a.calib,
        title: format!("{} {name}", super::model_name(&a.model)),
        method: method.into(),
        settings: vec![("scheme".into(), name.into())],
    })?;
    Ok(())
}
