//! Perplexity by llama-perplexity's method: the whole text is tokenized once (BOS first when the
//! model adds one), cut into consecutive chunks of `ctx` tokens, each chunk evaluated from an empty
//! cache with its first token replaced by BOS (when the model adds one), and only the second half
//! of each chunk scored, so every scored token has at least ctx/2 tokens of context.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use runtime::Model;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::stats::{Estimate, Moments};

/// How a token stream is cut into evaluation chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlan {
    pub ctx: usize,
    pub n_chunk: usize,
    /// Replaces the first token of every chunk (the model adds BOS).
    pub bos: Option<u32>,
}

impl ChunkPlan {
    /// The plan for `n_tokens` tokens: as many whole chunks as fit, at most `max_chunks`. Like
    /// llama-perplexity, refuses text shorter than two contexts.
    pub fn new(
        n_tokens: usize,
        ctx: usize,
        max_chunks: Option<usize>,
        bos: Option<u32>,
        what: &str,
    ) -> Result<ChunkPlan> {
        if ctx < 4 {
            return Err(EvalError::Option(format!(
                "--ctx {ctx}: a context needs at least 4 tokens"
            )));
        }
        if max_chunks == Some(0) {
            return Err(EvalError::Option("--chunks 0: nothing to evaluate".into()));
        }
        if n_tokens < 2 * ctx {
            return Err(EvalError::TooShort {
                what: what.into(),
                tokens: n_tokens,
                ctx,
                needed: 2 * ctx,
            });
        }
        let fit = n_tokens / ctx;
        Ok(ChunkPlan {
            ctx,
            n_chunk: max_chunks.map_or(fit, |m| m.min(fit)),
            bos,
        })
    }

    /// Index of the first position whose prediction is scored.
    pub fn first(&self) -> usize {
        self.ctx / 2
    }

    /// Scored predictions per chunk: positions first..ctx−1 predict tokens first+1..ctx.
    pub fn scored_per_chunk(&self) -> usize {
        self.ctx - 1 - self.first()
    }

    pub fn n_scored(&self) -> usize {
        self.n_chunk * self.scored_per_chunk()
    }

    /// Tokens the chunks cover.
    pub fn n_tokens(&self) -> usize {
        self.n_chunk * self.ctx
    }

    /// The model input of chunk `i`.
    pub fn input(&self, tokens: &[u32], i: usize) -> Vec<u32> {
        let mut x = tokens[i * self.ctx..(i + 1) * self.ctx].to_vec();
        if let Some(b) = self.bos {
            x[0] = b;
        }
        x
    }

    /// The tokens chunk `i`'s scored positions predict.
    pub fn targets<'a>(&self, tokens: &'a [u32], i: usize) -> &'a [u32] {
        let s = i * self.ctx + self.first() + 1;
        &tokens[s..s + self.scored_per_chunk()]
    }
}

/// A text tokenized as llama-perplexity does: the whole file at once, BOS first when the model
/// adds one, special-token text not interpreted.
pub fn tokenize_text(model: &Model, text: &str) -> Result<Vec<u32>> {
    let tok = model.tokenizer().ok_or_else(|| EvalError::NoTokenizer {
        model: model.source.clone(),
    })?;
    Ok(tok.encode(text, true)?)
}

/// Reads a text file (UTF-8; invalid bytes replaced, as llama.cpp reads bytes).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(EvalError::io(path))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The BOS token a chunk starts with for `model`, if it adds one.
pub fn chunk_bos(model: &Model) -> Option<u32> {
    let tok = model.tokenizer()?;
    if tok.adds_bos() {
        tok.bos()
    } else {
        None
    }
}

/// Evaluates each chunk from an empty cache and hands `f` the chunk index, the logits of its
/// scored positions (scored_per_chunk × vocab, row-major) and the tokens they predict.
pub fn for_each_chunk(
    model: &Model,
    tokens: &[u32],
    plan: &ChunkPlan,
    mut f: impl FnMut(usize, &[f32], &[u32]) -> Result<()>,
) -> Result<()> {
    let vocab = model.output.rows();
    if let Some(&bad) = tokens[..plan.n_tokens()]
        .iter()
        .find(|&&t| t as usize >= vocab)
    {
        return Err(EvalError::Option(format!(
            "token id {bad} is outside {}'s vocabulary of {vocab}",
            model.source
        )));
    }
    let mut cache = model.new_cache();
    for i in 0..plan.n_chunk {
        cache.clear();
        let logits = model.forward(&plan.input(tokens, i), &mut cache, plan.first());
        let rows = &logits[..plan.scored_per_chunk() * vocab];
        f(i, rows, plan.targets(tokens, i))?;
    }
    Ok(())
}

/// ln Σᵢ exp(row[i]), accumulated in float64 after subtracting the maximum.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + s.ln()
}

/// Negative log-likelihood of `target` under the softmax of `row`.
pub fn nll(row: &[f32], target: u32) -> f64 {
    log_sum_exp(row) - row[target as usize] as f64
}

/// The perplexity of a model on a token stream.
#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    /// exp(mean NLL) ± exp(mean NLL)·stderr(NLL).
    pub ppl: Estimate,
    /// Mean negative log-likelihood per scored token, in nats.
    pub nll: Estimate,
    pub ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Tokens the model evaluated (chunks × ctx).
    pub tokens_evaluated: usize,
    /// The running estimate after each chunk, as llama-perplexity prints it.
    pub running: Vec<f64>,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Accumulates per-token NLLs into a perplexity.
#[derive(Clone, Debug, Default)]
pub struct NllSum {
    pub moments: Moments,
    pub running: Vec<f64>,
}

impl NllSum {
    pub fn add_chunk(&mut self, nlls: &[f64]) {
        nlls.iter().for_each(|&v| self.moments.push(v));
        self.running.push(self.moments.mean().exp());
    }

    pub fn finish(self, plan: &ChunkPlan, seconds: f64) -> Perplexity {
        let nll = self.moments.estimate();
        Perplexity {
            ppl: nll.exp(),
            nll,
            ctx: plan.ctx,
            chunks: plan.n_chunk,
            tokens_scored: self.moments.count,
            tokens_evaluated: plan.n_tokens(),
            running: self.running,
            seconds,
            tokens_per_second: plan.n_tokens() as f64 / seconds.max(1e-9),
        }
    }
}

/// Per-row NLLs of `targets` under `logits` (rows × vocab), rows in parallel.
pub fn nlls(logits: &[f32], targets: &[u32]) -> Vec<f64> {
    let vocab = logits.len() / targets.len().max(1);
    logits
        .par_chunks_exact(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| nll(row, t))
        .collect()
}

/// The perplexity of `model` on `tokens` cut by `plan`; `on_chunk` sees the running estimate
/// after each chunk (chunk index, PPL so far).
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    plan: &ChunkPlan,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    let t0 = Instant::now();
    let mut acc = NllSum::default();
    for_each_chunk(model, tokens, plan, |i, logits, targets| {
        acc.add_chunk(&nlls(logits, targets));
        on_chunk(i, *acc.running.last().expect("a chunk was added"));
        Ok(())
    })?;
    Ok(acc.finish(plan, t0.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::model::synthetic::SyntheticSpec;

    #[test]
    fn plan_follows_llama_perplexity() {
        let p = ChunkPlan::new(1030, 512, None, Some(7), "text").unwrap();
        assert_eq!((p.n_chunk, p.first(), p.scored_per_chunk()), (2, 256, 255));
        let tokens: Vec<u32> = (0..1030).collect();
        let x = p.input(&tokens, 1);
        assert_eq!((x[0], x[1], x.len()), (7, 513, 512));
        assert_eq!(p.targets(&tokens, 1)[0], 512 + 257);
        assert_eq!(*p.targets(&tokens, 1).last().unwrap(), 1023);
        assert_eq!(
            ChunkPlan::new(1030, 512, Some(1), None, "t")
                .unwrap()
                .n_chunk,
            1
        );
        let e = ChunkPlan::new(1000, 512, None, None, "wiki.txt").unwrap_err();
        assert!(e.to_string().contains("1000 tokens") && e.to_string().contains("1024"));
    }

    #[test]
    fn nll_matches_float64_softmax() {
        let row: Vec<f32> = (0..50)
            .map(|i| ((i * 37) % 11) as f32 * 0.7 - 3.0)
            .collect();
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        for t in [0u32, 13, 49] {
            let want = -((row[t as usize] as f64).exp() / z).ln();
            assert!((nll(&row, t) - want).abs() < 1e-12);
        }
        // A huge logit does not overflow.
        let mut big = row.clone();
        big[3] = 1e4;
        assert!(nll(&big, 3).abs() < 1e-9);
    }

    #[test]
    fn chunks_start_from_an_empty_cache_with_bos() {
        // Chunk i's scored logits equal a fresh forward of its BOS-prefixed input.
        let model = SyntheticSpec::default().build(3);
        let vocab = model.output.rows();
        let tokens: Vec<u32> = (0..40).map(|i| (i * 7 % vocab) as u32).collect();
        let plan = ChunkPlan::new(tokens.len(), 16, None, Some(5), "t").unwrap();
        let mut seen = 0;
        for_each_chunk(&model, &tokens, &plan, |i, logits, targets| {
            let mut c = model.new_cache();
            let mut input = tokens[i * 16..(i + 1) * 16].to_vec();
            input[0] = 5;
            let want = model.forward(&input, &mut c, 8);
            assert_eq!(logits, &want[..7 * vocab]);
            assert_eq!(targets, &tokens[i * 16 + 9..(i + 1) * 16]);
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2);
        let p = perplexity(&model, &tokens, &plan, |_, _| {}).unwrap();
        assert_eq!(p.tokens_scored, 14);
        assert!(p.ppl.value > 1.0 && p.ppl.value < vocab as f64 * 2.0);
    }
}
