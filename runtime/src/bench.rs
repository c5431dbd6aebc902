//! Throughput benchmark with llama-bench's definitions, so the two tools' numbers compare:
//!
//! - `pp N`: one batch of N tokens from an empty cache (logits of the last token only, as
//!   llama.cpp outputs by default);
//! - `tg N`: N single-token decodes from an empty cache, each producing its logits; the next
//!   token is drawn at random, so no sampling is timed.
//!
//! Each test runs once untimed (pp: the whole batch; tg: one token), then `reps` times from a
//! cleared cache. Tokens are random ids (seeded), the first one BOS when the tokenizer adds one.
//! Rates are the mean and sample standard deviation of the per-repetition tokens/s.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use crate::model::{KvCache, Model};

/// Which of llama-bench's two tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTest {
    /// Prompt processing: one batch of this many tokens.
    Prompt(usize),
    /// Text generation: this many single-token decodes.
    Generate(usize),
}

impl BenchTest {
    /// llama-bench's label ("pp512", "tg128").
    pub fn label(self) -> String {
        match self {
            BenchTest::Prompt(n) => format!("pp{n}"),
            BenchTest::Generate(n) => format!("tg{n}"),
        }
    }

    pub fn n_tokens(self) -> usize {
        match self {
            BenchTest::Prompt(n) | BenchTest::Generate(n) => n,
        }
    }
}

/// The timings of one test.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub test: BenchTest,
    /// Wall time of each timed repetition.
    pub samples_ns: Vec<u64>,
}

impl BenchResult {
    /// Tokens per second of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = self.test.n_tokens() as f64;
        self.samples_ns
            .iter()
            .map(|ns| 1e9 * n / (*ns).max(1) as f64)
            .collect()
    }

    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }

    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }

    pub fn avg_ns(&self) -> f64 {
        mean(
            &self
                .samples_ns
                .iter()
                .map(|v| *v as f64)
                .collect::<Vec<_>>(),
        )
    }

    pub fn stddev_ns(&self) -> f64 {
        stddev(
            &self
                .samples_ns
                .iter()
                .map(|v| *v as f64)
                .collect::<Vec<_>>(),
        )
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n − 1), 0 for fewer than two samples.
fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Runs `test` on `model`: one untimed warm-up, then `reps` timed repetitions.
pub fn run(model: &Model, test: BenchTest, reps: usize, seed: u64) -> BenchResult {
    model.prepare();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vocab = model.embed.rows() as u32;
    let bos = model
        .tokenizer()
        .filter(|t| t.adds_bos())
        .and_then(|t| t.bos());
    let token = move |first: bool, rng: &mut rand::rngs::StdRng| match bos {
        Some(b) if first => b,
        _ => rng.random_range(0..vocab),
    };
    let mut cache = model.new_cache();
    let once = |cache: &mut KvCache, rng: &mut rand::rngs::StdRng, n: usize| match test {
        BenchTest::Prompt(_) => {
            let tokens: Vec<u32> = (0..n).map(|i| token(i == 0, rng)).collect();
            std::hint::black_box(model.forward(&tokens, cache, n.saturating_sub(1)));
        }
        BenchTest::Generate(_) => {
            let mut t = token(true, rng);
            for _ in 0..n {
                std::hint::black_box(model.forward(&[t], cache, 0));
                t = token(false, rng);
            }
        }
    };
    let n = test.n_tokens();
    if n > 0 {
        let warm = match test {
            BenchTest::Prompt(n) => n,
            BenchTest::Generate(_) => 1,
        };
        once(&mut cache, &mut rng, warm);
    }
    let samples_ns = (0..reps)
        .map(|_| {
            cache.clear();
            let t0 = Instant::now();
            if n > 0 {
                once(&mut cache, &mut rng, n);
            }
            t0.elapsed().as_nanos() as u64
        })
        .collect();
    BenchResult { test, samples_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_llama_bench_definitions() {
        let r = BenchResult {
            test: BenchTest::Generate(4),
            samples_ns: vec![1_000_000_000, 2_000_000_000],
        };
        assert_eq!(r.samples_ts(), vec![4.0, 2.0]);
        assert_eq!(r.avg_ts(), 3.0);
        assert!((r.stddev_ts() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(BenchTest::Prompt(512).label(), "pp512");
        assert_eq!(stddev(&[5.0]), 0.0);
    }

    #[test]
    fn runs_each_test_on_a_synthetic_model() {
        let model = crate::model::synthetic::SyntheticSpec::default().build(1);
        for test in [BenchTest::Prompt(7), BenchTest::Generate(3)] {
            let r = run(&model, test, 2, 0);
            assert_eq!(r.samples_ns.len(), 2);
            assert!(r.avg_ts() > 0.0);
        }
    }
}
