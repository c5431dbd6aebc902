use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(_a: Args) -> anyhow::Result<()> {
    anyhow::bail!("convert: not yet")
}
