use std::path::PathBuf;

use anyhow::Context;
use runtime::export::{write_hf_folder, DenseDtype};

use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file (any type) or Hugging Face folder.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Output folder (written atomically).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Weight dtype of the output.
    #[arg(long, value_enum, default_value_t = Dtype::Bf16)]
    dtype: Dtype,
    /// Largest safetensors shard, in bytes with an optional K/M/G suffix (as save_pretrained).
    #[arg(long, default_value = "5G", value_parser = super::parse_size)]
    max_shard_size: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dtype {
    Bf16,
    F16,
    F32,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let model = load_model(&a.model)?;
    let dtype = match a.dtype {
        Dtype::Bf16 => DenseDtype::BF16,
        Dtype::F16 => DenseDtype::F16,
        Dtype::F32 => DenseDtype::F32,
    };
    let t0 = std::time::Instant::now();
    let out = write_hf_folder(&model, &a.model, &a.out, dtype, a.max_shard_size)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {} ({} parameters, {:.1} s)",
        out.display(),
        model.n_params(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
