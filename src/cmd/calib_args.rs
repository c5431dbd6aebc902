//! The calibration flags every calibrating converter takes (flattened into its arguments).

use std::path::PathBuf;

use anyhow::Context;
use calib::{CalibOptions, CalibSet};

#[derive(clap::Args, Clone, Debug)]
pub struct CalibArgs {
    /// Calibration data: JSONL of {"text": ...} or {"messages": [...]} records (default: the
    /// calibration text installed by scripts/fetch-assets.sh).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Number of calibration samples.
    #[arg(long, default_value_t = 128)]
    pub nsamples: usize,
    /// Tokens per calibration sample.
    #[arg(long, default_value_t = 512)]
    pub seqlen: usize,
    /// Seed of the shuffle that picks the samples.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl CalibArgs {
    pub fn path(&self) -> PathBuf {
        self.calib
            .clone()
            .unwrap_or_else(calib::data::default_calib_path)
    }

    pub fn options(&self) -> CalibOptions {
        CalibOptions {
            nsamples: self.nsamples,
            seqlen: self.seqlen,
            seed: self.seed,
        }
    }

    /// Reads and packs the calibration samples with the model's tokenizer.
    pub fn load(&self, model: &runtime::Model) -> anyhow::Result<CalibSet> {
        let tok = super::tokenizer(model)?;
        let path = self.path();
        calib::load(&path, tok, &self.options())
            .with_context(|| format!("reading calibration data {}", path.display()))
    }
}
