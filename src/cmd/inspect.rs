use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face folder.
    path: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(_a: Args) -> anyhow::Result<()> {
    anyhow::bail!("inspect: not yet")
}
