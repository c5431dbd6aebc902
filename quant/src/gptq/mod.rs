//! GPTQ (Frantar et al. 2022; IST-DASLab gptq.py, the core AutoGPTQ, GPTQModel and
//! llm-compressor share): quantizes a linear's weight columns one at a time, spreading each
//! column's rounding error over the columns not yet quantized through the inverse Hessian of
//! the layer's calibration inputs, H = (2/N)·Σ x·xᵀ.
//!
//! [`Hessian`] accumulates H; [`Factor`] dampens and factors it once per input (q, k and v share
//! one, as do gate and up); [`quantize`] runs the blocked solver with lazy batch updates,
//! act-order and static groups (anchors.md B).
//!
//! Two choices differ from gptq.py, both toward what the artifact will hold:
//! - scales are rounded to f16 when a group is fitted (the files store f16), so each column's
//!   error is measured against the weights the artifact will actually hold;
//! - a group that starts inside a 128-column block is fitted on the block's error-updated
//!   weights (gptq.py reads the weights as they were when the block began).

mod linalg;
mod solver;
mod vector;

/// Σ a·b in SIMD lanes (the GPTQ solver's dot product, also AWQ's clip losses).
pub fn dot<T: crate::groupq::Real>(a: &[T], b: &[T]) -> T {
    vector::dots(a, [b])[0]
}

pub use linalg::{cholesky_lower, inverse_upper_factor, invert_lower};
pub use solver::quantize;

use crate::groupq::FitRule;

#[derive(Clone, Debug, PartialEq)]
pub struct GptqConfig {
    pub bits: u32,
    /// Input columns per group (the weight's width for one group per row).
    pub group_size: usize,
    pub sym: bool,
    /// Quantize columns in order of decreasing Hessian diagonal (desc_act).
    pub act_order: bool,
    /// Fit every group on the original weights before the solve (with act-order: groups stay
    /// contiguous in the original column order, so the file needs no reordering).
    pub static_groups: bool,
    /// Dampening added to H's diagonal, as a fraction of its mean.
    pub damp: f64,
    /// Columns per lazy-update block.
    pub block_size: usize,
}

impl Default for GptqConfig {
    fn default() -> Self {
        GptqConfig {
            bits: 4,
            group_size: 128,
            sym: true,
            act_order: false,
            static_groups: false,
            damp: 0.01,
            block_size: 128,
        }
    }
}

impl GptqConfig {
    pub fn fit_rule(&self) -> FitRule {
        FitRule::Gptq { sym: self.sym }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GptqError {
    #[error(
        "the Hessian of the calibration inputs is not positive definite even with dampening \
         {damp} × its mean diagonal (pivot {pivot} failed): the inputs are degenerate (too few \
         calibration tokens for {n} features?) or their values overflow"
    )]
    NotPositiveDefinite { damp: f64, pivot: usize, n: usize },
    #[error("the Hessian has non-finite entries ({count} of them): the calibration activations overflow")]
    NonFinite { count: usize },
    #[error("group size {group} does not divide the {cols} input features")]
    GroupSize { group: usize, cols: usize },
    #[error("{0}")]
    Shape(String),
}

/// Σ x·xᵀ over the calibration tokens seen so far (f64), for inputs of `n` features.
#[derive(Clone, Debug)]
pub struct Hessian {
    pub n: usize,
    pub sum: Vec<f64>,
    pub tokens: u64,
}

impl Hessian {
    pub fn new(n: usize) -> Hessian {
        Hessian {
            n,
            sum: vec![0.0; n * n],
            tokens: 0,
        }
    }

    /// Adds the Gram matrix Xᵀ·X (n × n, full or lower triangle) of `tokens` input rows.
    pub fn add_gram(&mut self, gram: &[f32], tokens: usize) {
        assert_eq!(gram.len(), self.n * self.n);
        for (s, g) in self.sum.iter_mut().zip(gram) {
            *s += *g as f64;
        }
        self.tokens += tokens as u64;
    }

    /// Adds input rows directly (n features each): the reference accumulation.
    pub fn add_rows(&mut self, x: &[f32]) {
        let n = self.n;
        assert!(x.len().is_multiple_of(n));
        for row in x.chunks_exact(n) {
            for (i, &xi) in row.iter().enumerate() {
                let sums = &mut self.sum[i * n..i * n + i + 1];
                for (s, &xj) in sums.iter_mut().zip(row) {
                    *s += xi as f64 * xj as f64;
                }
            }
        }
        self.tokens += (x.len() / n) as u64;
    }

    /// H = (2/N)·Σ x·xᵀ, symmetric, from the lower triangle.
    pub fn matrix(&self) -> Vec<f64> {
        let n = self.n;
        let k = 2.0 / self.tokens.max(1) as f64;
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = self.sum[i * n + j] * k;
                h[i * n + j] = v;
                h[j * n + i] = v;
            }
        }
        h
    }
}

/// What every linear reading one input shares: the column order, the columns no token ever
/// touched, and U with (H + damp)⁻¹ = Uᵀ·U in that order.
#[derive(Clone, Debug)]
pub struct Factor {
    pub n: usize,
    /// perm[i] = the original column quantized i-th (identity without act-order).
    pub perm: Vec<usize>,
    /// Columns whose Hessian diagonal is 0 (original order): their weights are zeroed.
    pub dead: Vec<bool>,
    /// n × n upper triangle, row-major, in `perm` order.
    pub u: Vec<f64>,
    /// The dampening that made H factor (fraction of the mean diagonal).
    pub damp: f64,
}

/// Dampening tried after `damp` fails: the increment doubles from 0.01 (0.01, 0.03, 0.07, ...)
/// until the matrix factors or the fraction reaches 1.
fn damp_schedule(damp: f64) -> impl Iterator<Item = f64> {
    std::iter::once(damp).chain(
        (0..)
            .map(move |k| damp + 0.01 * ((1u64 << (k + 1)) - 1) as f64)
            .take_while(|d| *d < 1.0),
    )
}

impl Factor {
    /// Prepares H for the solver: dead columns get a unit diagonal, act-order sorts columns by
    /// decreasing diagonal (stable), then H is dampened and factored, with more dampening each
    /// time the Cholesky factorization fails.
    pub fn new(h: &Hessian, cfg: &GptqConfig) -> Result<Factor, GptqError> {
        let n = h.n;
        let mut hm = h.matrix();
        let bad = hm.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(GptqError::NonFinite { count: bad });
        }
        let dead: Vec<bool> = (0..n).map(|i| hm[i * n + i] == 0.0).collect();
        for (i, d) in dead.iter().enumerate() {
            if *d {
                hm[i * n + i] = 1.0;
            }
        }
        let mut perm: Vec<usize> = (0..n).collect();
        if cfg.act_order {
            // Descending diagonal; ties keep the original order.
            perm.sort_by(|&a, &b| hm[b * n + b].total_cmp(&hm[a * n + a]));
        }
        let mut hp = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                hp[i * n + j] = hm[perm[i] * n + perm[j]];
            }
        }
        let mean_diag = (0..n).map(|i| hp[i * n + i]).sum::<f64>() / n.max(1) as f64;
        let mut last = (cfg.damp, 0);
        for damp in damp_schedule(cfg.damp) {
            let mut hd = hp.clone();
            for i in 0..n {
                hd[i * n + i] += damp * mean_diag;
            }
            match inverse_upper_factor(&hd, n) {
                Ok(u) => {
                    return Ok(Factor {
                        n,
                        perm,
                        dead,
                        u,
                        damp,
                    })
                }
                Err(pivot) => last = (damp, perm[pivot]),
            }
        }
        Err(GptqError::NotPositiveDefinite {
            damp: last.0,
            pivot: last.1,
            n,
        })
    }
}

/// A GPTQ-quantized linear and the solver's loss (Σ (w − q)² / U_ii², halved, as gptq.py
/// reports it).
#[derive(Clone, Debug)]
pub struct GptqResult {
    pub quant: crate::groupq::GroupQuant,
    pub loss: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damping_grows_until_the_matrix_factors() {
        let d: Vec<f64> = damp_schedule(0.01).collect();
        assert_eq!(d.len(), 7);
        assert!((d[1] - 0.02).abs() < 1e-12 && (d[2] - 0.04).abs() < 1e-12);
        assert!(d.iter().all(|x| *x < 1.0));
        // Rank-deficient H (two equal features): fails undamped, factors dampened.
        let mut h = Hessian::new(2);
        h.add_rows(&[1.0, 1.0, 0.0, 0.0]);
        assert!(inverse_upper_factor(&h.matrix(), 2).is_err());
        let cfg = GptqConfig {
            damp: 0.0,
            ..GptqConfig::default()
        };
        let f = Factor::new(&h, &cfg).unwrap();
        assert!(f.damp > 0.0);
    }

    #[test]
    fn indefinite_or_non_finite_hessians_are_errors() {
        let mut h = Hessian::new(2);
        h.sum = vec![1.0, 0.0, 0.0, -50.0];
        h.tokens = 2;
        let e = Factor::new(&h, &GptqConfig::default()).unwrap_err();
        assert!(
            matches!(e, GptqError::NotPositiveDefinite { pivot: 1, .. }),
            "{e}"
        );
        h.sum[0] = f64::INFINITY;
        assert_eq!(
            Factor::new(&h, &GptqConfig::default()).unwrap_err(),
            GptqError::NonFinite { count: 1 }
        );
    }

    #[test]
    fn act_order_sorts_by_decreasing_diagonal_and_marks_dead_columns() {
        let mut h = Hessian::new(3);
        h.add_rows(&[1.0, 0.0, 3.0, 2.0, 0.0, 1.0]);
        let cfg = GptqConfig {
            act_order: true,
            ..GptqConfig::default()
        };
        let f = Factor::new(&h, &cfg).unwrap();
        assert_eq!(f.perm, vec![2, 0, 1]);
        assert_eq!(f.dead, vec![false, true, false]);
    }
}
