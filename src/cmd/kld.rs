//! `quantize kld`: KL divergence of a model from a base model on the same text, with
//! llama-perplexity's statistics.

use std::path::PathBuf;

use anyhow::Context;
use evals::kld::{check_compatible, kl_divergence};
use evals::perplexity::read_text;
use evals::{BaseLogProbs, BaseOptions, Kld};
use serde::Serialize;

use super::load_model;
use super::ppl::{progress, Text};

#[derive(clap::Args)]
pub struct Args {
    /// The reference model (GGUF file or Hugging Face folder).
    #[arg(long, required_unless_present = "base_logits")]
    base: Option<PathBuf>,
    /// The model compared with the base.
    #[arg(long, short = 'm', required_unless_present = "save_base")]
    model: Option<PathBuf>,
    /// Text file, tokenized whole (required with --base; with --base-logits, checked against
    /// the tokens the file holds).
    #[arg(long, short = 'f', required_unless_present = "base_logits")]
    text: Option<PathBuf>,
    /// Tokens per chunk; the second half of each is scored [default: 512; with --base-logits,
    /// the file's].
    #[arg(long, short = 'c', conflicts_with = "base_logits")]
    ctx: Option<usize>,
    /// Evaluate at most this many chunks (default: as many as the text holds; with
    /// --base-logits, the file's).
    #[arg(long, conflicts_with = "base_logits")]
    chunks: Option<usize>,
    /// Save the base's log-probabilities to this file for later runs.
    #[arg(long, conflicts_with = "base_logits")]
    save_base: Option<PathBuf>,
    /// Read the base's log-probabilities from a file written by --save-base instead of running
    /// the base model.
    #[arg(long, conflicts_with = "base")]
    base_logits: Option<PathBuf>,
    /// Base tokens kept per position: the most likely ones until the rest holds at most this
    /// probability (0 = all tokens, exact KLD; files grow accordingly).
    #[arg(long, default_value_t = BaseOptions::default().tail_mass)]
    tail_mass: f64,
    /// At most this many base tokens kept per position.
    #[arg(long, default_value_t = BaseOptions::default().max_top)]
    max_top: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the base over a text (or reads its saved records) and keeps its tokenizer, for
/// `check_compatible`.
pub(crate) struct Base {
    pub logprobs: BaseLogProbs,
    pub tokenizer: Option<runtime::Tokenizer>,
    pub ppl: Option<evals::Perplexity>,
    pub text: Option<String>,
}

impl Base {
    pub fn compute(
        path: &std::path::Path,
        text_path: &std::path::Path,
        ctx: usize,
        chunks: Option<usize>,
        options: BaseOptions,
        quiet: bool,
    ) -> anyhow::Result<Base> {
        let mut model = load_model(path)?;
        let text = Text::load(&model, text_path, ctx, chunks)?;
        if !quiet {
            eprintln!("base:  {}", model.source);
            eprintln!("text:  {}", text.describe());
        }
        let bar = progress(text.plan.n_chunk, "base chunks");
        let (logprobs, ppl) =
            BaseLogProbs::compute(&model, &text.tokens, &text.plan, options, |_, ppl| {
                bar.inc(1);
                bar.set_message(format!("PPL {ppl:.4}"));
            })?;
        bar.finish_and_clear();
        Ok(Base {
            logprobs,
            tokenizer: model.tokenizer.take(),
            ppl: Some(ppl),
            text: Some(read_text(text_path)?),
        })
    }
}

/// Compares `model` with `base`, refusing a model that tokenizes differently.
pub(crate) fn compare(base: &Base, model: &runtime::Model) -> anyhow::Result<Kld> {
    check_compatible(
        &base.logprobs,
        base.tokenizer.as_ref(),
        model,
        base.text.as_deref(),
    )?;
    let bar = progress(base.logprobs.header.plan.n_chunk, "chunks");
    let r = kl_divergence(model, &base.logprobs, |_, kld| {
        bar.inc(1);
        bar.set_message(format!("mean KLD {kld:.5}"));
    })?;
    bar.finish_and_clear();
    Ok(r)
}

#[derive(Serialize)]
struct Report<'a> {
    base: &'a str,
    model: String,
    base_kept_tokens_mean: f64,
    #[serde(flatten)]
    kld: &'a Kld,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let options = BaseOptions {
        tail_mass: a.tail_mass,
        max_top: a.max_top,
    };
    let base = match (&a.base, &a.base_logits) {
        (Some(b), _) => {
            let text = a.text.as_ref().expect("clap requires --text with --base");
            let base = Base::compute(b, text, a.ctx.unwrap_or(512), a.chunks, options, a.json)?;
            if let Some(p) = &a.save_base {
                base.logprobs.save(p).with_context(|| {
                    format!("saving the base log-probabilities to {}", p.display())
                })?;
                let bytes = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                eprintln!(
                    "saved {} ({} positions, {:.1} MB, {:.0} tokens kept per position)",
                    p.display(),
                    base.logprobs.len(),
                    bytes as f64 / 1e6,
                    base.logprobs.mean_kept()
                );
            }
            base
        }
        (None, Some(f)) => {
            let logprobs = BaseLogProbs::load(f)?;
            let text = a.text.as_deref().map(read_text).transpose()?;
            Base {
                logprobs,
                tokenizer: None,
                ppl: None,
                text,
            }
        }
        (None, None) => unreachable!("clap requires --base or --base-logits"),
    };
    if let (Some(ppl), true) = (&base.ppl, a.model.is_none()) {
        println!(
            "base PPL = {:.4} +/- {:.5} over {} chunks",
            ppl.ppl.value, ppl.ppl.stderr, ppl.chunks
        );
    }
    let Some(model_path) = &a.model else {
        return Ok(());
    };
    let r = compare(&base, &load_model(model_path)?)?;
    if a.json {
        let report = Report {
            base: &base.logprobs.header.model,
            model: model_path.display().to_string(),
            base_kept_tokens_mean: base.logprobs.mean_kept(),
            kld: &r,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&base.logprobs.header.model, model_path, &r);
    }
    Ok(())
}

fn print_report(base: &str, model: &std::path::Path, r: &Kld) {
    let pm = |e: evals::stats::Estimate, scale: f64, prec: usize| {
        format!(
            "{:>10.prec$} ± {:>10.prec$}",
            e.value * scale,
            e.stderr * scale
        )
    };
    println!("base:  {base}");
    println!("model: {}", model.display());
    println!(
        "{} chunks of {}, {} tokens scored",
        r.chunks, r.ctx, r.tokens_scored
    );
    println!();
    println!("====== Perplexity statistics ======");
    println!("Mean PPL(Q)                   : {}", pm(r.ppl, 1.0, 6));
    println!("Mean PPL(base)                : {}", pm(r.ppl_base, 1.0, 6));
    println!(
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * r.ln_ppl_correlation
    );
    println!(
        "Mean ln(PPL(Q)/PPL(base))     : {}",
        pm(r.ln_ppl_ratio, 1.0, 6)
    );
    println!(
        "Mean PPL(Q)/PPL(base)         : {}",
        pm(r.ppl_ratio, 1.0, 6)
    );
    println!("Mean PPL(Q)-PPL(base)         : {}", pm(r.ppl_diff, 1.0, 6));
    println!();
    println!("====== KL divergence statistics ======");
    let k = &r.kld_distribution;
    println!("Mean    KLD: {}", pm(r.kld, 1.0, 6));
    for (name, v) in [
        ("Maximum", k.max),
        ("99.9%  ", k.p999),
        ("99.0%  ", k.p99),
        ("Median ", k.median),
        ("10.0%  ", k.p10),
        (" 5.0%  ", k.p05),
        (" 1.0%  ", k.p01),
        ("Minimum", k.min),
    ] {
        println!("{name} KLD: {v:10.6}");
    }
    println!(
        "(base tail mass grouped: mean {:.2e}, max {:.2e})",
        r.base_tail_mass_mean, r.base_tail_mass_max
    );
    println!();
    println!("====== Token probability statistics ======");
    let d = &r.delta_p_distribution;
    println!("Mean    Δp: {} %", pm(r.delta_p, 100.0, 3));
    for (name, v) in [
        ("Maximum", d.max),
        ("99.9%  ", d.p999),
        ("99.0%  ", d.p99),
        ("95.0%  ", d.p95),
        ("90.0%  ", d.p90),
        ("75.0%  ", d.p75),
        ("Median ", d.median),
        ("25.0%  ", d.p25),
        ("10.0%  ", d.p10),
        (" 5.0%  ", d.p05),
        (" 1.0%  ", d.p01),
        ("Minimum", d.min),
    ] {
        println!("{name} Δp: {:6.3}%", 100.0 * v);
    }
    println!("RMS Δp    : {} %", pm(r.delta_p_rms, 100.0, 3));
    println!("Same top p: {} %", pm(r.top1, 100.0, 3));
    println!();
    println!(
        "{} tokens evaluated in {:.1} s ({:.1} tokens/s)",
        r.chunks * r.ctx,
        r.seconds,
        r.tokens_per_second
    );
}
