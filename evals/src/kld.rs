//! KL divergence of a candidate model from a base model on the same chunks, with the statistics
//! llama-perplexity's KL-divergence mode prints: both perplexities and their ratio, KLD mean and
//! percentiles, the change Δp of the probability of the correct token, and how often the two
//! models' most likely tokens agree.
//!
//! The base's side is a [`BaseLogProbs`] (computed once, kept in memory or in a file), so the two
//! models never need to be loaded together.

use std::time::Instant;

use rayon::prelude::*;
use runtime::{Model, Tokenizer};
use serde::Serialize;

use crate::base_logits::{BaseLogProbs, BaseRecord};
use crate::error::{EvalError, Result};
use crate::perplexity::{for_each_chunk, tokenize_text};
use crate::stats::{Distribution, Estimate, Moments, Paired};
use crate::vocab::{first_token_difference, first_vocab_difference, TokenizerFingerprint};

/// What one scored position contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionStats {
    pub nll: f64,
    pub nll_base: f64,
    pub kld: f64,
    pub same_top: bool,
}

impl PositionStats {
    /// p(correct token) under the candidate minus under the base.
    pub fn delta_p(&self) -> f64 {
        (-self.nll).exp() - (-self.nll_base).exp()
    }
}

/// KL(base ‖ candidate) at one position from the candidate's logits and the base's record.
///
/// The record holds the base's most likely tokens exactly and the rest as one "tail" of mass r;
/// the tail is compared with the candidate's mass on the same tokens as one outcome:
/// Σ_top p·ln(p/q) + r·ln(r/q_tail). Grouping outcomes never increases a KL divergence, so this
/// is a lower bound of the full sum, short of it by r × (the KL divergence between the two
/// models' distributions within the tail).
pub fn position_stats(row: &[f32], base: &BaseRecord, target: u32) -> PositionStats {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut in_top = vec![false; row.len()];
    base.ids.iter().for_each(|&i| in_top[i as usize] = true);
    // One pass gives the normalizer and, summed from the tail's own terms (not 1 − q_top, which
    // cancels), the candidate's mass on the base's tail.
    let (mut z, mut z_tail) = (0.0f64, 0.0f64);
    for (&x, &top) in row.iter().zip(&in_top) {
        let e = (x as f64 - max).exp();
        z += e;
        if !top {
            z_tail += e;
        }
    }
    let lse = max + z.ln();
    let mut kl = 0.0;
    for (&id, &lp) in base.ids.iter().zip(base.logprobs) {
        let lp = lp as f64;
        kl += lp.exp() * (lp - (row[id as usize] as f64 - lse));
    }
    let r = base.tail as f64;
    if r > 0.0 {
        kl += r * (r / (z_tail / z).max(f64::MIN_POSITIVE)).ln();
    }
    let cand_top = runtime::generate::argmax(row);
    PositionStats {
        nll: lse - row[target as usize] as f64,
        nll_base: base.nll as f64,
        // Rounding can leave a hair below zero when the two distributions are equal.
        kld: kl.max(0.0),
        same_top: base.ids.first() == Some(&cand_top),
    }
}

/// Accumulates per-position statistics.
#[derive(Clone, Debug, Default)]
pub struct KldSum {
    nll: Paired,
    kld: Moments,
    delta_p: Moments,
    delta_p2: Moments,
    same_top: Moments,
    klds: Vec<f64>,
    delta_ps: Vec<f64>,
}

impl KldSum {
    pub fn push(&mut self, s: &PositionStats) {
        self.nll.push(s.nll, s.nll_base);
        self.kld.push(s.kld);
        let dp = s.delta_p();
        self.delta_p.push(dp);
        self.delta_p2.push(dp * dp);
        self.same_top.push(s.same_top as u8 as f64);
        self.klds.push(s.kld);
        self.delta_ps.push(dp);
    }

    pub fn count(&self) -> usize {
        self.kld.count
    }

    pub fn mean_kld(&self) -> f64 {
        self.kld.mean()
    }

    pub fn finish(self, base: &BaseLogProbs, seconds: f64) -> Kld {
        let ln_ppl = self.nll.a.estimate();
        let ln_ppl_base = self.nll.b.estimate();
        let ppl = ln_ppl.exp();
        let ppl_base = ln_ppl_base.exp();
        let ln_ratio = self.nll.difference();
        let cov = ppl.value * ppl_base.value * self.nll.mean_covariance();
        let ms = self.delta_p2.estimate();
        let rms = ms.value.sqrt();
        let tails: Vec<f64> = base.tails.iter().map(|&t| t as f64).collect();
        let plan = &base.header.plan;
        Kld {
            ppl,
            ppl_base,
            ln_ppl_correlation: self.nll.correlation(),
            ln_ppl_ratio: ln_ratio,
            ppl_ratio: ln_ratio.exp(),
            ppl_diff: Estimate {
                value: ppl.value - ppl_base.value,
                stderr: (ppl.stderr.powi(2) + ppl_base.stderr.powi(2) - 2.0 * cov)
                    .max(0.0)
                    .sqrt(),
            },
            kld: self.kld.estimate(),
            kld_distribution: Distribution::of(self.klds),
            top1: self.same_top.estimate(),
            delta_p: self.delta_p.estimate(),
            delta_p_distribution: Distribution::of(self.delta_ps),
            delta_p_rms: Estimate {
                value: rms,
                stderr: 0.5 / rms * ms.stderr,
            },
            base_tail_mass_mean: tails.iter().sum::<f64>() / tails.len().max(1) as f64,
            base_tail_mass_max: tails.iter().copied().fold(0.0, f64::max),
            tokens_scored: self.kld.count,
            ctx: plan.ctx,
            chunks: plan.n_chunk,
            seconds,
            tokens_per_second: plan.n_tokens() as f64 / seconds.max(1e-9),
        }
    }
}

/// The candidate-versus-base report (probabilities as fractions, not percent).
#[derive(Clone, Debug, Serialize)]
pub struct Kld {
    pub ppl: Estimate,
    pub ppl_base: Estimate,
    pub ln_ppl_correlation: f64,
    /// ln(PPL(candidate)/PPL(base)), with the error of the paired difference.
    pub ln_ppl_ratio: Estimate,
    pub ppl_ratio: Estimate,
    pub ppl_diff: Estimate,
    pub kld: Estimate,
    pub kld_distribution: Distribution,
    /// Fraction of positions where both models' most likely token is the same.
    pub top1: Estimate,
    /// p(correct token) under the candidate minus under the base.
    pub delta_p: Estimate,
    pub delta_p_distribution: Distribution,
    pub delta_p_rms: Estimate,
    /// The base probability mass kept only as a total (see `position_stats`): the KLD is short of
    /// the full sum by at most this mass times the KL divergence within it.
    pub base_tail_mass_mean: f64,
    pub base_tail_mass_max: f64,
    pub tokens_scored: usize,
    pub ctx: usize,
    pub chunks: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Evaluates `model` on the chunks `base` was computed on and compares them position by
/// position; `on_chunk` sees (chunk index, running mean KLD).
pub fn kl_divergence(
    model: &Model,
    base: &BaseLogProbs,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Kld> {
    let t0 = Instant::now();
    let plan = &base.header.plan;
    let per = plan.scored_per_chunk();
    let vocab = model.output.rows();
    let mut acc = KldSum::default();
    for_each_chunk(model, &base.tokens, plan, |i, logits, targets| {
        let stats: Vec<PositionStats> = logits
            .par_chunks_exact(vocab)
            .zip(targets.par_iter())
            .enumerate()
            .map(|(j, (row, &t))| position_stats(row, &base.record(i * per + j), t))
            .collect();
        stats.iter().for_each(|s| acc.push(s));
        on_chunk(i, acc.mean_kld());
        Ok(())
    })?;
    Ok(acc.finish(base, t0.elapsed().as_secs_f64()))
}

/// Refuses a candidate that does not read the same token ids as the base: a different
/// vocabulary, BOS convention or logits width, or (given the base's tokenizer or the text's
/// tokens under it) a different tokenization. Says what differs.
pub fn check_compatible(
    base: &BaseLogProbs,
    base_tokenizer: Option<&Tokenizer>,
    candidate: &Model,
    text: Option<&str>,
) -> Result<()> {
    let tok = candidate
        .tokenizer()
        .ok_or_else(|| EvalError::NoTokenizer {
            model: candidate.source.clone(),
        })?;
    let mismatch = |what: String| {
        EvalError::TokenizerMismatch(format!(
            "{what} (base {}, candidate {})",
            base.header.model, candidate.source
        ))
    };
    let fp = TokenizerFingerprint::of(tok);
    if let Some(d) = base.header.tokenizer.difference(&fp) {
        let detail = base_tokenizer
            .and_then(|b| first_vocab_difference(b, tok))
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(mismatch(format!("{d}{detail}")));
    }
    if candidate.output.rows() != base.header.vocab {
        return Err(mismatch(format!(
            "logits width {} vs {}",
            base.header.vocab,
            candidate.output.rows()
        )));
    }
    if let Some(text) = text {
        // The base evaluated a prefix of the text's tokens; the candidate must read the same.
        let mine = tokenize_text(candidate, text)?;
        let n = base.tokens.len().min(mine.len());
        if let Some(d) = first_token_difference(&base.tokens, &mine[..n]) {
            return Err(mismatch(d));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base_logits::compress_row;

    fn rows(n: usize, vocab: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n * vocab)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    fn softmax64(row: &[f32]) -> Vec<f64> {
        let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect()
    }

    fn kl64(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
    }

    #[test]
    fn full_records_give_the_exact_kl_divergence() {
        let vocab = 300;
        let base = rows(1, vocab, 1, 12.0);
        let mut cand = base.clone();
        let noise = rows(1, vocab, 2, 1.0);
        cand.iter_mut().zip(&noise).for_each(|(c, n)| *c += n);
        // Keeping every token: nothing grouped.
        let rec = compress_row(&base, 17, 0.0, vocab);
        assert_eq!(rec.tail, 0.0);
        let s = position_stats(&cand, &rec.as_record(), 17);
        let (p, q) = (softmax64(&base), softmax64(&cand));
        assert!(
            (s.kld - kl64(&p, &q)).abs() < 1e-6,
            "{} vs {}",
            s.kld,
            kl64(&p, &q)
        );
        assert!((s.nll + q[17].ln()).abs() < 1e-9);
        assert!((s.nll_base + p[17].ln()).abs() < 1e-6);
        let top = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        assert_eq!(s.same_top, top(&p) == top(&q));
        assert!((s.delta_p() - (q[17] - p[17])).abs() < 1e-7);
    }

    #[test]
    fn grouped_tail_is_a_tight_lower_bound() {
        let vocab = 2000;
        for seed in 0..20 {
            let base = rows(1, vocab, seed, 20.0);
            let mut cand = base.clone();
            cand.iter_mut()
                .zip(rows(1, vocab, seed + 100, 2.0))
                .for_each(|(c, n)| *c += n);
            let (p, q) = (softmax64(&base), softmax64(&cand));
            let exact = kl64(&p, &q);
            let rec = compress_row(&base, 0, 1e-3, vocab);
            let r = rec.tail as f64;
            assert!(r <= 1e-3 && rec.ids.len() < vocab);
            let got = position_stats(&cand, &rec.as_record(), 0).kld;
            // Lower bound, short by r·KL(p_tail ‖ q_tail).
            let tail: Vec<usize> = (0..vocab)
                .filter(|i| !rec.ids.contains(&(*i as u32)))
                .collect();
            let (pt, qt): (f64, f64) = tail
                .iter()
                .fold((0.0, 0.0), |a, &i| (a.0 + p[i], a.1 + q[i]));
            let within: f64 = tail
                .iter()
                .map(|&i| p[i] / pt * ((p[i] / pt) / (q[i] / qt)).ln())
                .sum();
            assert!(got <= exact + 1e-9, "{got} > {exact}");
            assert!((exact - got - pt * within).abs() < 1e-6, "seed {seed}");
        }
    }

    #[test]
    fn statistics_match_direct_float64_computation() {
        let (vocab, n) = (64, 40);
        let base = rows(n, vocab, 5, 8.0);
        let mut cand = base.clone();
        cand.iter_mut()
            .zip(rows(n, vocab, 6, 1.5))
            .for_each(|(c, e)| *c += e);
        let targets: Vec<u32> = (0..n as u32).map(|i| i * 13 % vocab as u32).collect();
        let mut acc = KldSum::default();
        let (mut klds, mut nll, mut nllb, mut dps, mut same) = (vec![], vec![], vec![], vec![], 0);
        for i in 0..n {
            let (b, c) = (&base[i * vocab..][..vocab], &cand[i * vocab..][..vocab]);
            let rec = compress_row(b, targets[i], 0.0, vocab);
            acc.push(&position_stats(c, &rec.as_record(), targets[i]));
            let (p, q) = (softmax64(b), softmax64(c));
            klds.push(kl64(&p, &q));
            nll.push(-q[targets[i] as usize].ln());
            nllb.push(-p[targets[i] as usize].ln());
            dps.push(q[targets[i] as usize] - p[targets[i] as usize]);
            let top = |v: &[f64]| (0..vocab).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
            same += (top(&p) == top(&q)) as usize;
        }
        let header = crate::base_logits::tests::header(vocab, 1, 2 * n + 1);
        let bl = BaseLogProbs::empty(header);
        let r = acc.finish(&bl, 1.0);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((r.kld.value - mean(&klds)).abs() < 1e-6);
        assert!((r.ppl.value - mean(&nll).exp()).abs() < 1e-9);
        // The base NLLs are stored as f32.
        assert!((r.ppl_base.value / mean(&nllb).exp() - 1.0).abs() < 1e-6);
        assert!((r.top1.value - same as f64 / n as f64).abs() < 1e-12);
        assert!((r.delta_p.value - mean(&dps)).abs() < 1e-6);
        let rms = (dps.iter().map(|d| d * d).sum::<f64>() / n as f64).sqrt();
        assert!((r.delta_p_rms.value - rms).abs() < 1e-6);
        let mut sorted = klds.clone();
        sorted.sort_by(f64::total_cmp);
        assert!((r.kld_distribution.median - crate::stats::median(&sorted)).abs() < 1e-6);
        assert!((r.kld_distribution.p99 - crate::stats::percentile(&sorted, 0.99)).abs() < 1e-6);
        // ln ratio error from the per-position differences of NLL.
        let d: Vec<f64> = nll.iter().zip(&nllb).map(|(a, b)| a - b).collect();
        let md = mean(&d);
        let sd =
            (d.iter().map(|x| (x - md).powi(2)).sum::<f64>() / (n as f64 - 1.0) / n as f64).sqrt();
        assert!((r.ln_ppl_ratio.value - md).abs() < 1e-6);
        assert!((r.ln_ppl_ratio.stderr - sd).abs() < 1e-5);
    }
}
