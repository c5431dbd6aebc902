//! IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-uniform codebook. Both run ggml's
//! `quantize_row_iq4_nl_impl` with 7 extra scale candidates either side, which is what
//! `quantize_iq4_nl` / `quantize_iq4_xs` (and so llama-quantize) use with or without an imatrix.

use crate::ggml::blocks::{BlockIQ4NL, BlockIQ4XS, IQ4_VALUES};
use crate::ggml::types::QK_K;

use super::numeric::{abs_max, nearest_int, to_f16, GROUP_MAX_EPS};

const NTRY: i32 = 7;
const BLOCK: usize = 32;

/// Index of the codebook value nearest to `x` (the upper one on ties), by bisection as ggml does.
fn best_index(x: f32) -> u8 {
    let val = |i: usize| IQ4_VALUES[i] as f32;
    if x <= val(0) {
        return 0;
    }
    if x >= val(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < val(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - val(hi - 1) < val(hi) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

/// Weighted sums Σw·q·x and Σw·q² of indexing `x` at inverse scale `id`.
#[inline(always)]
fn fit(x: &[f32], w: &[f32], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for (&xj, &wj) in x.iter().zip(w) {
        let l = best_index(id * xj);
        let q = IQ4_VALUES[l as usize] as f32;
        sumqx += wj * q * xj;
        sumq2 += wj * q * q;
    }
    (sumqx, sumq2)
}

/// The best scale of one 32-element block, or None for a block of (near) zeros.
#[inline(always)]
fn block_scale(x: &[f32], w: &[f32]) -> Option<f32> {
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let v0 = IQ4_VALUES[0] as f32;
    let (sumqx, sumq2) = fit(x, w, 1.0 / (-max / v0));
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + IQ4_VALUES[0] as i32) as f32 / max;
        let (sumqx, sumq2) = fit(x, w, id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// Block weights: `qw·sqrt(σ² + x²)` with an imatrix, x² without.
fn weights(x: &[f32], qw: Option<&[f32]>, sigma2: f32) -> [f32; BLOCK] {
    match qw {
        Some(qw) => std::array::from_fn(|j| qw[j] * (sigma2 + x[j] * x[j]).sqrt()),
        None => std::array::from_fn(|j| x[j] * x[j]),
    }
}

/// σ² of a super-block: twice its mean square.
fn sigma2(x: &[f32]) -> f32 {
    let s = x.iter().fold(0f32, |s, &v| s + v * v);
    s * (2.0 / x.len() as f32)
}

fn pack(levels: &[u8; BLOCK]) -> [u8; 16] {
    std::array::from_fn(|j| levels[j] | (levels[j + 16] << 4))
}

#[inline(always)]
pub fn iq4_nl(x: &[f32], qw: Option<&[f32]>) -> BlockIQ4NL {
    let w = weights(x, qw, sigma2(x));
    let d = block_scale(x, &w).unwrap_or(0.0);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let levels: [u8; BLOCK] = std::array::from_fn(|j| best_index(id * x[j]));
    BlockIQ4NL {
        d: to_f16(d),
        qs: pack(&levels),
    }
}

#[inline(always)]
pub fn iq4_xs(x: &[f32], qw: Option<&[f32]>) -> BlockIQ4XS {
    let sigma2 = sigma2(x);
    let mut scales = [0f32; QK_K / BLOCK];
    for (ib, s) in scales.iter_mut().enumerate() {
        let xb = &x[BLOCK * ib..BLOCK * (ib + 1)];
        let w = weights(xb, qw.map(|q| &q[BLOCK * ib..]), sigma2);
        *s = block_scale(xb, &w).unwrap_or(0.0);
    }
    let (_, max_scale) = abs_max(&scales);
    let d = -max_scale / 32.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };

    let mut qs = [0u8; QK_K / 2];
    let mut scales_l = [0u8; QK_K / 64];
    let mut scales_h = 0u16;
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        let dl = d * l as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        let xb = &x[BLOCK * ib..];
        let levels: [u8; BLOCK] = std::array::from_fn(|j| best_index(idl * xb[j]));
        qs[16 * ib..16 * ib + 16].copy_from_slice(&pack(&levels));
        let l = (l + 32) as u8;
        scales_l[ib / 2] |= (l & 0xf) << (4 * (ib % 2));
        scales_h |= ((l >> 4) as u16) << (2 * ib);
    }
    BlockIQ4XS {
        d: to_f16(d),
        scales_h,
        scales_l,
        qs,
    }
}
