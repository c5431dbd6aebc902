//! The 32-element legacy types. Without an importance matrix llama-quantize writes ggml's
//! reference rounding (`quantize_row_q*_ref`); with one it runs a weighted scale search per block,
//! with weights `qw·sqrt(σ² + x²)` where σ² is the mean square of the whole row.

use crate::ggml::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};

use super::numeric::{abs_max, c_abs_max, c_trunc, round_c_int, to_f16};
use super::search::{make_qkx_quants, make_qx_quants, GRID_IMATRIX};

const QK: usize = 32;

/// Packs 32 levels of at most 4 bits: element j in the low nibble of byte j, j+16 in the high.
#[inline(always)]
fn pack_nibbles(levels: &[u8; QK]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        *o = levels[j] | (levels[j + 16] << 4);
    }
    out
}

/// Splits 32 five-bit levels into nibbles and the little-endian fifth-bit word.
#[inline(always)]
fn pack_q5(levels: &[u8; QK]) -> ([u8; 16], [u8; 4]) {
    let mut qh = 0u32;
    let mut lo = [0u8; QK];
    for (j, &l) in levels.iter().enumerate() {
        qh |= (((l & 0x10) >> 4) as u32) << j;
        lo[j] = l & 0x0f;
    }
    (pack_nibbles(&lo), qh.to_le_bytes())
}

/// The weights of the importance-matrix searches: `qw·sqrt(σ² + x²)`.
fn block_weights(x: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    std::array::from_fn(|j| qw[j] * (sigma2 + x[j] * x[j]).sqrt())
}

/// σ² of the legacy importance-matrix paths: the mean square over the whole row.
pub fn row_sigma2(row: &[f32]) -> f32 {
    let sum_x2 = row.iter().fold(0f32, |s, &v| s + v * v);
    sum_x2 / row.len() as f32
}

/// Reference symmetric rounding with `d = max / -half` (Q4_0: half = 8, Q5_0: half = 16): the
/// signed extreme maps to exactly `-half`, and levels are `trunc(x/d + half + 0.5)` capped.
#[inline(always)]
fn symmetric_ref(x: &[f32], half: i32) -> (f32, [u8; QK]) {
    let (_, max) = abs_max(x);
    let d = max / -(half as f32);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let top = (2 * half - 1) as i8;
    let mut levels = [0u8; QK];
    for (l, &v) in levels.iter_mut().zip(x) {
        let q = c_trunc(v * id + (half as f32 + 0.5)) as i8;
        *l = q.min(top) as u8;
    }
    (d, levels)
}

/// Reference affine rounding: `d = (max - min) / nmax`, `m = min`, levels `trunc((x-min)/d + 0.5)`.
/// Q4_1 caps them at 15 in int8 arithmetic (`cap`); Q5_1 stores the truncation as is.
#[inline(always)]
fn affine_ref(x: &[f32], nmax: i32, cap: Option<i8>) -> (f32, f32, [u8; QK]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / nmax as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut levels = [0u8; QK];
    for (l, &v) in levels.iter_mut().zip(x) {
        let q = c_trunc((v - min) * id + 0.5);
        *l = match cap {
            Some(cap) => (q as i8).min(cap) as u8,
            None => q as u8,
        };
    }
    (d, min, levels)
}

#[inline(always)]
pub fn q4_0(x: &[f32], qw: Option<(&[f32], f32)>) -> BlockQ4_0 {
    let (d, levels) = match qw {
        None => symmetric_ref(x, 8),
        Some((qw, sigma2)) => symmetric_search(x, qw, sigma2, 8),
    };
    BlockQ4_0 {
        d: to_f16(d),
        qs: pack_nibbles(&levels),
    }
}

#[inline(always)]
pub fn q5_0(x: &[f32], qw: Option<(&[f32], f32)>) -> BlockQ5_0 {
    let (d, levels) = match qw {
        None => symmetric_ref(x, 16),
        Some((qw, sigma2)) => symmetric_search(x, qw, sigma2, 16),
    };
    let (qs, qh) = pack_q5(&levels);
    BlockQ5_0 {
        d: to_f16(d),
        qh,
        qs,
    }
}

#[inline(always)]
pub fn q4_1(x: &[f32], qw: Option<(&[f32], f32)>) -> BlockQ4_1 {
    let (d, m, levels) = match qw {
        None => affine_ref(x, 15, Some(15)),
        Some((qw, sigma2)) => affine_search(x, qw, sigma2, 15),
    };
    BlockQ4_1 {
        d: to_f16(d),
        m: to_f16(m),
        qs: pack_nibbles(&levels),
    }
}

#[inline(always)]
pub fn q5_1(x: &[f32], qw: Option<(&[f32], f32)>) -> BlockQ5_1 {
    let (d, m, levels) = match qw {
        None => affine_ref(x, 31, None),
        Some((qw, sigma2)) => affine_search(x, qw, sigma2, 31),
    };
    let (qs, qh) = pack_q5(&levels);
    BlockQ5_1 {
        d: to_f16(d),
        m: to_f16(m),
        qh,
        qs,
    }
}

/// Q8_0 has no importance-matrix variant: `d = amax / 127`, `q = round(x / d)`.
#[inline(always)]
pub fn q8_0(x: &[f32]) -> BlockQ8_0 {
    let amax = c_abs_max(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    // With both finite, |x·id| ≤ amax / d ≈ 127 (a subnormal d can overflow id), so the
    // branch-free rounding of round_c_int applies to every element, in lanes.
    if amax.is_finite() && id.is_finite() {
        for (q, &xj) in qs.iter_mut().zip(x) {
            let v = xj * id;
            let t = v as i32;
            let frac = v - t as f32;
            *q = (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8;
        }
    } else {
        for (q, &xj) in qs.iter_mut().zip(x) {
            *q = round_c_int(xj * id) as i8;
        }
    }
    BlockQ8_0 { d: to_f16(d), qs }
}

#[inline(always)]
fn symmetric_search(x: &[f32], qw: &[f32], sigma2: f32, half: i32) -> (f32, [u8; QK]) {
    let w = block_weights(x, qw, sigma2);
    let mut levels = [0i8; QK];
    let d = make_qx_quants(half, x, &w, &mut levels);
    (d, levels.map(|l| l as u8))
}

#[inline(always)]
fn affine_search(x: &[f32], qw: &[f32], sigma2: f32, nmax: i32) -> (f32, f32, [u8; QK]) {
    let w = block_weights(x, qw, sigma2);
    let mut levels = [0u8; QK];
    let fit = make_qkx_quants(nmax, x, &w, &mut levels, GRID_IMATRIX);
    (fit.scale, -fit.min, levels)
}
