//! The summary statistics of the evaluations, with the definitions llama-perplexity and
//! lm-evaluation-harness use, so our figures and theirs mean the same thing.

use serde::Serialize;

/// Running Σx, Σx² and n of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.sum += x;
        self.sum2 += x * x;
        self.count += 1;
    }

    pub fn merge(&mut self, o: &Moments) {
        self.sum += o.sum;
        self.sum2 += o.sum2;
        self.count += o.count;
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        self.sum / self.count as f64
    }

    /// Standard error of the mean, √((E[x²] − E[x]²)/(n − 1)): llama-perplexity's formula, equal
    /// to the sample standard deviation (n − 1 denominator) over √n, which is lm-eval's
    /// `mean_stderr`. NaN below two values.
    pub fn stderr(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let m = self.sum / n;
        let var = self.sum2 / n - m * m;
        (var.max(0.0) / (n - 1.0)).sqrt()
    }

    pub fn estimate(&self) -> Estimate {
        Estimate {
            value: self.mean(),
            stderr: self.stderr(),
        }
    }
}

/// A value with its standard error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub stderr: f64,
}

impl Estimate {
    /// exp(x) of an estimate of x, with the delta-method error exp(x)·σ (how llama-perplexity turns
    /// the mean negative log-likelihood into a perplexity ± error).
    pub fn exp(self) -> Estimate {
        let v = self.value.exp();
        Estimate {
            value: v,
            stderr: v * self.stderr,
        }
    }
}

/// Running co-moments of paired samples (a, b): what llama-perplexity needs for the error of
/// ln(PPL(Q)/PPL(base)), whose two terms are strongly correlated.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Paired {
    pub a: Moments,
    pub b: Moments,
    pub sum_ab: f64,
}

impl Paired {
    pub fn push(&mut self, a: f64, b: f64) {
        self.a.push(a);
        self.b.push(b);
        self.sum_ab += a * b;
    }

    pub fn merge(&mut self, o: &Paired) {
        self.a.merge(&o.a);
        self.b.merge(&o.b);
        self.sum_ab += o.sum_ab;
    }

    /// Covariance of the two means: (E[ab] − E[a]E[b])/(n − 1).
    pub fn mean_covariance(&self) -> f64 {
        let n = self.a.count as f64;
        if self.a.count < 2 {
            return f64::NAN;
        }
        (self.sum_ab / n - self.a.mean() * self.b.mean()) / (n - 1.0)
    }

    /// mean(a) − mean(b) with the error of a paired difference.
    pub fn difference(&self) -> Estimate {
        let (sa, sb) = (self.a.stderr(), self.b.stderr());
        Estimate {
            value: self.a.mean() - self.b.mean(),
            stderr: (sa * sa + sb * sb - 2.0 * self.mean_covariance())
                .max(0.0)
                .sqrt(),
        }
    }

    /// Pearson correlation of the two means' estimates.
    pub fn correlation(&self) -> f64 {
        self.mean_covariance() / (self.a.stderr() * self.b.stderr())
    }
}

/// The value at `fraction` of `sorted` (ascending), linearly interpolated between neighbours:
/// llama-perplexity's percentile.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let Some((&lo, &hi)) = sorted.first().zip(sorted.last()) else {
        return f64::NAN;
    };
    if fraction <= 0.0 {
        return lo;
    }
    if fraction >= 1.0 {
        return hi;
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p as usize;
    let w = p - i as f64;
    (1.0 - w) * sorted[i] + w * sorted[(i + 1).min(sorted.len() - 1)]
}

/// The middle value of `sorted`, or the mean of the two middle values.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// The percentiles reported for a distribution of per-token values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    pub min: f64,
    pub p01: f64,
    pub p05: f64,
    pub p10: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Distribution {
    /// Sorts `values` and summarizes them.
    pub fn of(mut values: Vec<f64>) -> Distribution {
        values.sort_by(f64::total_cmp);
        let p = |f| percentile(&values, f);
        Distribution {
            min: p(0.0),
            p01: p(0.01),
            p05: p(0.05),
            p10: p(0.10),
            p25: p(0.25),
            median: median(&values),
            p75: p(0.75),
            p90: p(0.90),
            p95: p(0.95),
            p99: p(0.99),
            p999: p(0.999),
            max: p(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, seed: u64) -> Vec<f64> {
        // A deterministic, skewed sample without a random-number crate.
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                -u.ln()
            })
            .collect()
    }

    #[test]
    fn mean_and_stderr_match_two_pass_float64() {
        let x = sample(1000, 7);
        let mut m = Moments::default();
        x.iter().for_each(|v| m.push(*v));
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((m.mean() - mean).abs() < 1e-12);
        assert!((m.stderr() - (var / n).sqrt()).abs() < 1e-12);
        // Bernoulli data: the binomial error √(p(1−p)/(n−1)).
        let mut b = Moments::default();
        (0..200).for_each(|i| b.push((i % 4 == 0) as u8 as f64));
        assert!((b.stderr() - (0.25f64 * 0.75 / 199.0).sqrt()).abs() < 1e-12);
        assert!(Moments::default().stderr().is_nan());
    }

    #[test]
    fn paired_difference_uses_the_covariance() {
        let a = sample(500, 1);
        let noise = sample(500, 2);
        let b: Vec<f64> = a.iter().zip(&noise).map(|(x, e)| x + 0.1 * e).collect();
        let mut p = Paired::default();
        a.iter().zip(&b).for_each(|(x, y)| p.push(*x, *y));
        // The paired difference's error is that of the per-item differences.
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let mut md = Moments::default();
        d.iter().for_each(|v| md.push(*v));
        let diff = p.difference();
        assert!((diff.value - md.mean()).abs() < 1e-12);
        assert!((diff.stderr - md.stderr()).abs() < 1e-9);
        assert!(p.correlation() > 0.9);
    }

    #[test]
    fn percentiles_interpolate_like_llama_perplexity() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 8.0);
        // p = 0.5·3 = 1.5 → halfway between 2 and 4.
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert!((percentile(&v, 0.99) - (0.03 * 4.0 + 0.97 * 8.0)).abs() < 1e-12);
        assert_eq!(median(&v), 3.0);
        assert_eq!(median(&[3.0, 1.0, 2.0][..1]), 3.0);
        let d = Distribution::of(vec![5.0, 1.0, 3.0]);
        assert_eq!((d.min, d.median, d.max), (1.0, 3.0, 5.0));
    }
}
