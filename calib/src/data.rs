//! Calibration data: JSONL of {"text": ...} or {"messages": [...]} records (the latter rendered
//! with the model's chat template), tokenized, shuffled with a seed and packed into fixed-length
//! samples. Deterministic for a given file, tokenizer, seed and sizes.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use runtime::tokenizer::{ChatMessage, Tokenizer};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: no calibration records (the file is empty)")]
    Empty { path: PathBuf },
    #[error(
        "{path}: only {available} tokens of calibration text; {nsamples} samples × {seqlen} tokens need {needed} (lower --nsamples or --seqlen, or add text)"
    )]
    TooShort {
        path: PathBuf,
        available: usize,
        nsamples: usize,
        seqlen: usize,
        needed: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug)]
pub struct CalibOptions {
    pub nsamples: usize,
    pub seqlen: usize,
    pub seed: u64,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            nsamples: 128,
            seqlen: 512,
            seed: 42,
        }
    }
}

/// Tokenized calibration samples, each exactly `seqlen` tokens.
#[derive(Clone, Debug)]
pub struct CalibSet {
    pub samples: Vec<Vec<u32>>,
    pub source: PathBuf,
    pub records: usize,
    pub tokens_available: usize,
}

impl CalibSet {
    pub fn n_tokens(&self) -> usize {
        self.samples.iter().map(Vec::len).sum()
    }

    /// One line for the user: what was read and what will be used.
    pub fn summary(&self) -> String {
        format!(
            "calibration: {} samples × {} tokens from {} ({} records, {} tokens available)",
            self.samples.len(),
            self.samples.first().map_or(0, Vec::len),
            self.source.display(),
            self.records,
            self.tokens_available
        )
    }
}

/// The text of one JSONL record.
fn record_text(v: &Value, tok: &Tokenizer) -> Result<String, String> {
    if let Some(t) = v.get("text") {
        return t
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("field \"text\" is {t}, expected a string"));
    }
    if let Some(m) = v.get("messages") {
        let msgs: Vec<ChatMessage> = serde_json::from_value(m.clone()).map_err(|e| {
            format!("field \"messages\": {e} (expected [{{\"role\": ..., \"content\": ...}}, ...])")
        })?;
        return tok
            .apply_chat_template(&msgs, false)
            .map_err(|e| e.to_string());
    }
    Err("record has neither \"text\" nor \"messages\"".into())
}

/// Reads, tokenizes and packs the calibration file.
pub fn load(path: &Path, tok: &Tokenizer, opts: &CalibOptions) -> Result<CalibSet, CalibError> {
    if opts.nsamples == 0 || opts.seqlen < 2 {
        return Err(CalibError::Invalid(format!(
            "need at least 1 sample of at least 2 tokens (got --nsamples {} --seqlen {})",
            opts.nsamples, opts.seqlen
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| CalibError::Io {
        path: path.to_owned(),
        source,
    })?;
    // Records tokenized in parallel, kept in file order; the first bad line (in file order)
    // is the error reported.
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let tokenized: Vec<Result<Vec<u32>, CalibError>> = lines
        .into_par_iter()
        .map(|(i, line)| {
            let err = |msg: String| CalibError::Line {
                path: path.to_owned(),
                line: i + 1,
                msg,
            };
            let v: Value =
                serde_json::from_str(line).map_err(|e| err(format!("not valid JSON: {e}")))?;
            let t = record_text(&v, tok).map_err(err)?;
            tok.encode(&t, false).map_err(|e| err(e.to_string()))
        })
        .collect();
    let mut docs: Vec<Vec<u32>> = Vec::new();
    for ids in tokenized {
        let ids = ids?;
        if !ids.is_empty() {
            docs.push(ids);
        }
    }
    if docs.is_empty() {
        return Err(CalibError::Empty {
            path: path.to_owned(),
        });
    }
    let records = docs.len();
    let tokens_available: usize = docs.iter().map(Vec::len).sum();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    docs.shuffle(&mut rng);

    // Each sample starts with BOS when the model expects one, then continues the shuffled stream.
    let bos: Vec<u32> = if tok.adds_bos() {
        tok.bos().into_iter().collect()
    } else {
        vec![]
    };
    let body = opts.seqlen - bos.len();
    let needed = opts.nsamples * body;
    if tokens_available < needed {
        return Err(CalibError::TooShort {
            path: path.to_owned(),
            available: tokens_available,
            nsamples: opts.nsamples,
            seqlen: opts.seqlen,
            needed,
        });
    }
    let mut stream = docs.into_iter().flatten();
    let samples = (0..opts.nsamples)
        .map(|_| {
            bos.iter()
                .copied()
                .chain(stream.by_ref().take(body))
                .collect()
        })
        .collect();
    Ok(CalibSet {
        samples,
        source: path.to_owned(),
        records,
        tokens_available,
    })
}

/// The default calibration file installed by scripts/fetch-assets.sh.
pub fn default_calib_path() -> PathBuf {
    assets_dir().join("calib/default.jsonl")
}

/// The asset cache: $QUANTIZE_ASSETS or ~/.cache/quantize/assets.
pub fn assets_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("QUANTIZE_ASSETS") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/quantize/assets")
}
