//! `quantize ppl`: perplexity by llama-perplexity's method.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use evals::perplexity::{chunk_bos, perplexity, read_text, tokenize_text, ChunkPlan};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face folder.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Text file, tokenized whole.
    #[arg(long, short = 'f')]
    text: PathBuf,
    /// Tokens per chunk; the second half of each is scored.
    #[arg(long, short = 'c', default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks (default: as many as the text holds).
    #[arg(long)]
    chunks: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// The chunks of a text file for a model, tokenized as llama-perplexity does.
pub(crate) struct Text {
    pub path: PathBuf,
    pub tokens: Vec<u32>,
    pub plan: ChunkPlan,
}

impl Text {
    pub fn load(
        model: &runtime::Model,
        path: &Path,
        ctx: usize,
        chunks: Option<usize>,
    ) -> anyhow::Result<Text> {
        let text = read_text(path)?;
        let tokens = tokenize_text(model, &text)
            .with_context(|| format!("tokenizing {}", path.display()))?;
        let plan = ChunkPlan::new(
            tokens.len(),
            ctx,
            chunks,
            chunk_bos(model),
            &path.display().to_string(),
        )?;
        Ok(Text {
            path: path.to_owned(),
            tokens,
            plan,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}: {} tokens, {} chunks of {} ({} scored per chunk)",
            self.path.display(),
            self.tokens.len(),
            self.plan.n_chunk,
            self.plan.ctx,
            self.plan.scored_per_chunk()
        )
    }
}

/// A progress bar on stderr (drawn only on a terminal) counting chunks or items.
pub(crate) fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} {{msg}} (eta {{eta}})"
        ))
        .expect("static template"),
    );
    bar
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    text: String,
    text_tokens: usize,
    #[serde(flatten)]
    ppl: &'a evals::Perplexity,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let model = load_model(&a.model)?;
    let text = Text::load(&model, &a.text, a.ctx, a.chunks)?;
    if !a.json {
        println!("model: {}", model.source);
        println!("text:  {}", text.describe());
    }
    let bar = progress(text.plan.n_chunk, "chunks");
    let mut out = std::io::stdout();
    let json = a.json;
    let r = perplexity(&model, &text.tokens, &text.plan, |i, ppl| {
        bar.inc(1);
        bar.set_message(format!("PPL {ppl:.4}"));
        if !json {
            bar.suspend(|| {
                let _ = write!(out, "[{}]{ppl:.4},", i + 1);
                let _ = out.flush();
            });
        }
    })?;
    bar.finish_and_clear();
    if a.json {
        let report = Report {
            model: &model.source,
            text: text.path.display().to_string(),
            text_tokens: text.tokens.len(),
            ppl: &r,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!();
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            r.ppl.value, r.ppl.stderr
        );
        println!(
            "{} tokens evaluated in {:.1} s ({:.1} tokens/s)",
            r.tokens_evaluated, r.seconds, r.tokens_per_second
        );
    }
    Ok(())
}
