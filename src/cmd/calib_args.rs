//! The calibration flags every calibrating converter shares (flatten [`CalibArgs`] into a
//! command's arguments).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use calib::{CalibOptions, CalibSet};

#[derive(clap::Args, Clone, Debug)]
pub struct CalibArgs {
    /// Calibration data: JSONL, one {"text": ...} or {"messages": [...]} record per line (chat
    /// messages are rendered with the model's template). Default: the asset set's
    /// calib/default.jsonl (scripts/fetch-assets.sh).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Calibration samples.
    #[arg(long, default_value_t = CalibOptions::default().nsamples)]
    pub nsamples: usize,
    /// Tokens per sample.
    #[arg(long, default_value_t = CalibOptions::default().seqlen)]
    pub seqlen: usize,
    /// Seed of the record shuffle.
    #[arg(long, default_value_t = CalibOptions::default().seed)]
    pub seed: u64,
    /// Also write the exact token samples used, as JSONL of {"input_ids": [...]} (to give
    /// another tool the same calibration).
    #[arg(long)]
    pub save_samples: Option<PathBuf>,
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

    /// Reads, tokenizes (with the model's tokenizer) and packs the calibration set, prints its
    /// summary line and writes the samples when asked.
    pub fn load(&self, model: &runtime::Model) -> anyhow::Result<CalibSet> {
        let path = self.path();
        let set = calib::load(&path, super::tokenizer(model)?, &self.options())?;
        eprintln!("{}", set.summary());
        if let Some(p) = &self.save_samples {
            let write = || -> std::io::Result<()> {
                let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
                for s in &set.samples {
                    writeln!(f, "{}", serde_json::json!({ "input_ids": s }))?;
                }
                f.flush()
            };
            write().with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(set)
    }
}
