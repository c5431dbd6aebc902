//! AWQ (Lin et al. 2023; AutoAWQ, adopted by llm-compressor's AWQModifier): per-input-channel
//! scales s that move quantization error away from the channels with large activations. A
//! linear computes Q(W·diag(s))·(x/s), the division folded into the layer before it (a norm's
//! weight or the previous linear's rows). The scales come from a grid search on the module's
//! calibration output; then each group's range is clipped where that lowers the output error.
//!
//! The searches here are pure: the caller measures the loss of each candidate (by running the
//! module, or through the inputs' Gram matrix for a single linear).

use rayon::prelude::*;

use crate::groupq::{dequantize_value, fit, quantize_value, FitRule};

/// AWQ's 4-bit, zero-point quantizer settings and grid sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqConfig {
    pub bits: u32,
    pub group_size: usize,
    /// Scale grid points (llm-compressor: no scaling, then duo scaling at n_grid − 1 ratios).
    pub n_grid: usize,
    /// Clip search: max|w| shrunk by i/clip_grid for i below max_shrink·clip_grid.
    pub clip_grid: usize,
    pub max_shrink: f32,
}

impl Default for AwqConfig {
    fn default() -> Self {
        AwqConfig {
            bits: 4,
            group_size: 128,
            n_grid: 20,
            clip_grid: 20,
            max_shrink: 0.5,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AwqError {
    #[error("no grid point gave a finite loss (non-finite activations or weights)")]
    NoFiniteLoss,
}

/// Mean over the rows of all `linears` (each [rows_i × cols]) of |w| / max|w| of its group:
/// how large each input channel's weights are relative to their group (AutoAWQ's w_mean).
pub fn weight_mean(linears: &[&[f32]], cols: usize, group: usize) -> Vec<f32> {
    let mut sum = vec![0f64; cols];
    let mut rows = 0usize;
    for w in linears {
        for row in w.chunks_exact(cols) {
            for (g, chunk) in row.chunks(group).enumerate() {
                let m = chunk.iter().fold(0f32, |a, x| a.max(x.abs())) + 1e-6;
                for (j, x) in chunk.iter().enumerate() {
                    sum[g * group + j] += (x.abs() / m) as f64;
                }
            }
            rows += 1;
        }
    }
    sum.iter()
        .map(|s| (s / rows.max(1) as f64) as f32)
        .collect()
}

/// The scales of grid point `k` of `n_grid`: point 0 is no scaling; point k ≥ 1 is duo
/// scaling at ratio r = (k − 1)/(n_grid − 2): s = max(x_mean^r / (w_mean^(1−r) + 1e-4), 1e-4),
/// normalized by sqrt(max·min), with non-finite values set to 1 (llm-compressor's grid).
pub fn grid_scales(x_mean: &[f32], w_mean: &[f32], k: usize, n_grid: usize) -> Vec<f32> {
    if k == 0 {
        return vec![1.0; x_mean.len()];
    }
    let r = (k - 1) as f32 / (n_grid.max(3) - 2) as f32;
    let mut s: Vec<f32> = x_mean
        .iter()
        .zip(w_mean)
        .map(|(x, w)| (x.powf(r) / (w.powf(1.0 - r) + 1e-4)).max(1e-4))
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(a, b), v| (a.min(*v), b.max(*v)));
    let norm = (hi * lo).sqrt();
    for v in s.iter_mut() {
        *v /= norm;
        if !v.is_finite() {
            *v = 1.0;
        }
    }
    s
}

/// Q(W·diag(s))·diag(s)⁻¹ for the [rows × cols] `w`: the weight a scaled, quantized linear
/// applies to the unscaled input.
pub fn scaled_fake_quant(w: &[f32], cols: usize, s: &[f32], cfg: &AwqConfig) -> Vec<f32> {
    let maxq = (1u32 << cfg.bits) - 1;
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols))
        .for_each(|(o, row)| {
            let scaled: Vec<f32> = row.iter().zip(s).map(|(x, s)| x * s).collect();
            for (g, chunk) in scaled.chunks(cfg.group_size).enumerate() {
                let p = fit(chunk, cfg.bits, FitRule::Awq);
                for (j, x) in chunk.iter().enumerate() {
                    let c = g * cfg.group_size + j;
                    o[c] = dequantize_value::<f32>(quantize_value(*x, p, maxq), p) / s[c];
                }
            }
        });
    out
}

/// The outcome of a scale search.
#[derive(Clone, Debug)]
pub struct ScaleSearch {
    pub scales: Vec<f32>,
    /// The grid point chosen (0 = no scaling).
    pub best: usize,
    /// Loss of every grid point, in order.
    pub losses: Vec<f64>,
}

/// Tries every grid point's scales and keeps the one with the lowest `loss` (the first on ties;
/// non-finite losses never win).
pub fn search_scales(
    x_mean: &[f32],
    w_mean: &[f32],
    n_grid: usize,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> Result<ScaleSearch, AwqError> {
    let mut best: Option<(usize, f64, Vec<f32>)> = None;
    let mut losses = Vec::with_capacity(n_grid);
    for k in 0..n_grid {
        let s = grid_scales(x_mean, w_mean, k, n_grid);
        let l = loss(&s);
        losses.push(l);
        if l.is_finite() && best.as_ref().is_none_or(|b| l < b.1) {
            best = Some((k, l, s));
        }
    }
    let (best, _, scales) = best.ok_or(AwqError::NoFiniteLoss)?;
    Ok(ScaleSearch {
        scales,
        best,
        losses,
    })
}

/// The Gram matrix Σ_t x_t·x_tᵀ of a linear's calibration inputs (cols × cols, row-major), and
/// the tokens it sums over: the clip search reads its diagonal blocks.
pub struct Gram<'a> {
    pub g: &'a [f32],
    pub cols: usize,
    pub tokens: usize,
}

/// AutoAWQ's clip search for a [rows × cols] weight: for each (row, group), the clamp ±m with
/// m = max|w|·(1 − i/clip_grid) (i < max_shrink·clip_grid) whose quantized weights give the
/// smallest mean squared group output error on the calibration inputs. The error of one
/// candidate is Δᵀ·G_g·Δ / tokens, Δ = Q(clamp(w)) − w over the group, G_g the group's block of
/// the Gram matrix: exactly AutoAWQ's mean over tokens of (Σ_j x_j·Δ_j)², on every token
/// rather than a subsample. Returns the clamp per (group, row), group-major.
pub fn search_clip(w: &[f32], rows: usize, gram: &Gram, cfg: &AwqConfig) -> Vec<f32> {
    let (cols, g) = (gram.cols, cfg.group_size);
    assert_eq!(w.len(), rows * cols);
    let ng = cols / g;
    let maxq = (1u32 << cfg.bits) - 1;
    let steps = ((cfg.max_shrink * cfg.clip_grid as f32) as usize).max(1);
    let per_row: Vec<Vec<f32>> = w
        .par_chunks(cols)
        .map(|row| {
            let mut best = Vec::with_capacity(ng);
            let (mut clamped, mut delta, mut gd) = (vec![0f32; g], vec![0f32; g], vec![0f32; g]);
            for gi in 0..ng {
                let wg = &row[gi * g..(gi + 1) * g];
                let org = wg.iter().fold(0f32, |a, x| a.max(x.abs()));
                let (mut best_err, mut best_m) = (f64::INFINITY, org);
                for i in 0..steps {
                    let m = org * (1.0 - i as f32 / cfg.clip_grid as f32);
                    for (c, x) in clamped.iter_mut().zip(wg) {
                        *c = x.clamp(-m, m);
                    }
                    let p = fit(&clamped, cfg.bits, FitRule::Awq);
                    for ((d, c), x) in delta.iter_mut().zip(&clamped).zip(wg) {
                        *d = dequantize_value::<f32>(quantize_value(*c, p, maxq), p) - x;
                    }
                    // Δᵀ·G_g·Δ, G_g = rows gi·g.. and columns gi·g.. of the Gram matrix.
                    for (a, gda) in gd.iter_mut().enumerate() {
                        let grow = &gram.g[(gi * g + a) * cols + gi * g..][..g];
                        *gda = crate::gptq::dot(grow, &delta);
                    }
                    let err = gd
                        .iter()
                        .zip(&delta)
                        .map(|(x, y)| (x * y) as f64)
                        .sum::<f64>()
                        / gram.tokens.max(1) as f64;
                    if err < best_err {
                        (best_err, best_m) = (err, m);
                    }
                }
                best.push(best_m);
            }
            best
        })
        .collect();
    let mut out = vec![0f32; ng * rows];
    for (r, b) in per_row.iter().enumerate() {
        for (gi, m) in b.iter().enumerate() {
            out[gi * rows + r] = *m;
        }
    }
    out
}

/// Clamps each (group, row) of `w` to ±max (as returned by [`search_clip`]).
pub fn apply_clip(w: &mut [f32], rows: usize, cols: usize, group: usize, max: &[f32]) {
    for (r, row) in w.chunks_exact_mut(cols).enumerate() {
        for (gi, chunk) in row.chunks_mut(group).enumerate() {
            let m = max[gi * rows + r];
            for x in chunk {
                *x = x.clamp(-m, m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_starts_with_identity_and_normalizes() {
        let x = [1.0f32, 4.0, 0.25];
        let w = [0.5f32, 0.5, 1.0];
        assert_eq!(grid_scales(&x, &w, 0, 20), vec![1.0; 3]);
        for k in 1..20 {
            let s = grid_scales(&x, &w, k, 20);
            let (lo, hi) = s
                .iter()
                .fold((f32::MAX, 0f32), |(a, b), v| (a.min(*v), b.max(*v)));
            assert!((lo * hi - 1.0).abs() < 1e-5, "k={k}: {s:?}");
        }
        // Ratio 1 (k = 19): proportional to x_mean / (1 + 1e-4).
        let s = grid_scales(&x, &w, 19, 20);
        assert!((s[1] / s[0] - 4.0).abs() < 1e-4);
    }

    #[test]
    fn search_keeps_the_first_lowest_finite_loss() {
        let x = [1.0f32, 2.0];
        let w = [1.0f32, 1.0];
        let losses = [3.0, f64::NAN, 1.0, 1.0, 2.0];
        let mut k = 0;
        let r = search_scales(&x, &w, 5, |_| {
            k += 1;
            losses[k - 1]
        })
        .unwrap();
        assert_eq!(r.best, 2);
        assert_eq!(r.scales, grid_scales(&x, &w, 2, 5));
        assert_eq!(
            search_scales(&x, &w, 3, |_| f64::NAN).unwrap_err(),
            AwqError::NoFiniteLoss
        );
    }

    #[test]
    fn weight_mean_is_relative_to_each_group() {
        let a = [1.0f32, -2.0, 4.0, 4.0];
        let b = [2.0f32, 2.0, -1.0, 0.5];
        let m = weight_mean(&[&a, &b], 4, 2);
        let want = [
            (0.5 + 1.0) / 2.0,
            (1.0 + 1.0) / 2.0,
            (1.0 + 1.0) / 2.0,
            (1.0 + 0.5) / 2.0,
        ];
        for (g, w) in m.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{m:?}");
        }
    }
}
