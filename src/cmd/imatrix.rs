//! `quantize imatrix`: an importance matrix for `quantize gguf --imatrix` (and llama-quantize),
//! collected the way llama-imatrix does, from calibration JSONL or plain text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use calib::imatrix::{collect_imatrix, text_chunks};
use calib::CalibOptions;

use quant::imatrix::Imatrix;

use super::{load_model, tokenizer};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face folder or Hub id (best: the full-precision model).
    #[arg(long, short = 'm', required_unless_present = "convert")]
    model: Option<PathBuf>,
    /// Instead of collecting, rewrite this importance matrix (either format) in --out's format.
    #[arg(long, conflicts_with_all = ["model", "calib", "text"])]
    convert: Option<PathBuf>,
    /// Calibration JSONL ({"text": ...} or {"messages": [...]} per line).
    #[arg(long, conflicts_with = "text")]
    calib: Option<PathBuf>,
    /// Plain text, cut into --ctx-token chunks as llama-imatrix cuts its -f file.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Output: GGUF imatrix format, or llama-imatrix's legacy format when the name ends in .dat
    /// (the one llama.cpp builds from before mid 2025 read).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Tokens per chunk of --text (llama-imatrix's -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use at most this many chunks of --text (llama-imatrix's --chunks).
    #[arg(long)]
    chunks: Option<usize>,
    /// Samples of --calib.
    #[arg(long, default_value_t = 128)]
    nsamples: usize,
    /// Tokens per sample of --calib.
    #[arg(long, default_value_t = 512)]
    seqlen: usize,
    /// Seed of the --calib shuffle.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let legacy = a.out.extension().is_some_and(|e| e == "dat");
    if let Some(src) = &a.convert {
        let im = Imatrix::read(src)?;
        write(&im, &a.out, legacy)?;
        eprintln!(
            "wrote {} ({} entries from {})",
            a.out.display(),
            im.entries.len(),
            src.display()
        );
        return Ok(());
    }
    let model = load_model(
        a.model
            .as_deref()
            .expect("clap requires --model without --convert"),
    )?;
    let tok = tokenizer(&model)?;
    let (chunks, dataset) = match (&a.calib, &a.text) {
        (Some(c), None) => {
            let opts = CalibOptions {
                nsamples: a.nsamples,
                seqlen: a.seqlen,
                seed: a.seed,
            };
            let set = calib::load(c, tok, &opts)?;
            eprintln!("{}", set.summary());
            (set.samples, c.clone())
        }
        (None, Some(t)) => {
            let text = std::fs::read_to_string(t).with_context(|| t.display().to_string())?;
            let chunks = text_chunks(tok, &text, a.ctx, a.chunks)
                .with_context(|| t.display().to_string())?;
            eprintln!(
                "{}: {} chunks of {} tokens",
                t.display(),
                chunks.len(),
                a.ctx
            );
            (chunks, t.clone())
        }
        _ => bail!("give the calibration data as --calib FILE.jsonl or --text FILE.txt"),
    };
    let progress = indicatif::ProgressBar::new(chunks.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} chunks {eta}")
            .expect("static template"),
    );
    let im = collect_imatrix(&model, &chunks, &dataset.to_string_lossy(), |n| {
        progress.set_position(n as u64)
    });
    progress.finish_and_clear();
    write(&im, &a.out, legacy)?;
    eprintln!(
        "wrote {} ({} format, {} entries, {} chunks, {:.1} s)",
        a.out.display(),
        if legacy { "legacy .dat" } else { "GGUF" },
        im.entries.len(),
        im.chunk_count,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write(im: &Imatrix, out: &Path, legacy: bool) -> anyhow::Result<()> {
    if legacy {
        let skipped = im.write_legacy(out)?;
        if !skipped.is_empty() {
            eprintln!("left out entries without data: {}", skipped.join(", "));
        }
    } else {
        im.write_gguf(out)?;
    }
    Ok(())
}
