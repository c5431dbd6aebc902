//! The K-quants: 256-element super-blocks of 16 or 8 sub-blocks whose scales are themselves
//! quantized. Each type has ggml's reference path (no importance matrix) and its weighted path
//! (`quantize_row_q*_K_impl`), which llama-quantize picks by whether an imatrix entry exists.

use half::f16;

use crate::ggml::blocks::{
    q3k_scales, scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K,
};
use crate::ggml::types::QK_K;

use super::numeric::{abs_max, c_max, nearest_int, to_f16, GROUP_MAX_EPS};
use super::search::{
    make_q3_quants, make_qkx_quants_x8, make_qp_quants, make_qx_quants, AffineGrid, GRID_IMATRIX,
    GRID_Q2K, GRID_Q4K, GRID_Q5K,
};

/// σ² of the K-quant weighted paths: `factor · Σx² / 256` over the super-block (factor 1 for
/// Q2_K, 2 elsewhere).
fn sigma2(x: &[f32], factor: f32) -> f32 {
    let sum_x2 = x.iter().fold(0f32, |s, &v| s + v * v);
    factor * sum_x2 / QK_K as f32
}

/// Importance weights `qw·sqrt(σ² + x²)` of one sub-block, and their sum.
fn imatrix_weights<const N: usize>(x: &[f32], qw: &[f32], sigma2: f32) -> ([f32; N], f32) {
    let w: [f32; N] = std::array::from_fn(|l| qw[l] * (sigma2 + x[l] * x[l]).sqrt());
    let sum = w.iter().fold(0f32, |s, &v| s + v);
    (w, sum)
}

/// Packs 2-bit levels: per 128 elements, byte l holds elements l, l+32, l+64, l+96.
fn pack_2bit(levels: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for (half, q) in qs.chunks_exact_mut(32).enumerate() {
        let l = &levels[128 * half..];
        for (i, b) in q.iter_mut().enumerate() {
            *b = l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6);
        }
    }
    qs
}

// ---------------------------------------------------------------------------------------- Q2_K

#[inline(always)]
pub fn q2_k(x: &[f32], qw: Option<&[f32]>) -> BlockQ2K {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let (d, dmin, packed) = match qw {
        None => {
            let w: [f32; QK_K] = std::array::from_fn(|l| x[l].abs());
            for h in 0..2 {
                let r = 128 * h..128 * h + 128;
                let fits =
                    make_qkx_quants_x8(3, &x[r.clone()], &w[r.clone()], &mut levels[r], GRID_Q2K);
                for (j, fit) in fits.iter().enumerate() {
                    (scales[8 * h + j], mins[8 * h + j]) = (fit.scale, fit.min);
                }
            }
            let (ls, d) = quantize_to_max(&scales, 15.0);
            let (lm, dmin) = quantize_to_max(&mins, 15.0);
            let packed: [u8; 16] = std::array::from_fn(|j| ls[j] | (lm[j] << 4));
            (to_f16(d), to_f16(dmin), packed)
        }
        Some(qw) => {
            let sigma2 = sigma2(x, 1.0);
            let mut sw = [0f32; 16];
            let mut w = [0f32; QK_K];
            for j in 0..16 {
                let xs = &x[16 * j..16 * j + 16];
                let (wj, sum) = imatrix_weights::<16>(xs, &qw[16 * j..], sigma2);
                w[16 * j..16 * j + 16].copy_from_slice(&wj);
                sw[j] = sum;
            }
            for h in 0..2 {
                let r = 128 * h..128 * h + 128;
                let fits = make_qkx_quants_x8(
                    3,
                    &x[r.clone()],
                    &w[r.clone()],
                    &mut levels[r],
                    GRID_IMATRIX,
                );
                for (j, fit) in fits.iter().enumerate() {
                    (scales[8 * h + j], mins[8 * h + j]) = (fit.scale, fit.min);
                }
            }
            let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
            let d = make_qp_quants(15, &scales, &mut ls, &sw);
            let m = make_qp_quants(15, &mins, &mut lm, &sw);
            let packed: [u8; 16] = std::array::from_fn(|j| ls[j] | (lm[j] << 4));
            (to_f16(d), to_f16(m), packed)
        }
    };
    // Re-round with the scales as stored.
    let (df, mf) = (d.to_f32(), dmin.to_f32());
    for (j, &sc) in packed.iter().enumerate() {
        let dl = df * (sc & 0xf) as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = mf * (sc >> 4) as f32;
        for (q, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(&x[16 * j..]) {
            *q = nearest_int((v + ml) / dl).clamp(0, 3) as u8;
        }
    }
    BlockQ2K {
        scales: packed,
        qs: pack_2bit(&levels),
        d,
        dmin,
    }
}

/// Maps non-negative values to 4-bit levels of `max / nmax` (the reference Q2_K scale coding).
/// Returns the levels (stored as C stores an int in a uint8_t) and the step.
fn quantize_to_max(v: &[f32; 16], nmax: f32) -> ([u8; 16], f32) {
    let max = v.iter().fold(0f32, |m, &s| c_max(s, m));
    if max > 0.0 {
        let iscale = nmax / max;
        (v.map(|s| nearest_int(iscale * s) as u8), max / nmax)
    } else {
        ([0; 16], 0.0)
    }
}

// ---------------------------------------------------------------------------------------- Q3_K

#[inline(always)]
pub fn q3_k(x: &[f32], qw: Option<&[f32]>) -> BlockQ3K {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (scale_levels, d) = match qw {
        None => {
            for (j, s) in scales.iter_mut().enumerate() {
                *s = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut levels[16 * j..16 * j + 16]);
            }
            // the scale of largest magnitude, with its sign, maps to -32
            let (_, max_scale) = abs_max(&scales);
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                let ls =
                    scales.map(|s| ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8);
                (ls, to_f16(1.0 / iscale))
            } else {
                ([0u8; 16], f16::ZERO)
            }
        }
        Some(qw) => {
            let sigma2 = sigma2(x, 2.0);
            let mut sw = [0f32; 16];
            for j in 0..16 {
                let xs = &x[16 * j..16 * j + 16];
                let (w, sum) = imatrix_weights::<16>(xs, &qw[16 * j..], sigma2);
                sw[j] = sum;
                scales[j] = make_qx_quants(4, xs, &w, &mut levels[16 * j..16 * j + 16]);
            }
            let mut ls = [0i8; 16];
            let d = make_qx_quants(32, &scales, &sw, &mut ls);
            (ls.map(|l| l as u8), to_f16(d))
        }
    };
    let packed = pack_q3_scales(&scale_levels);

    // Re-round with the scales as stored; sub-blocks whose scale is zero keep the search levels.
    let df = d.to_f32();
    for (j, sc) in q3k_scales(&packed).into_iter().enumerate() {
        let dl = df * (sc as i32 - 32) as f32;
        if dl == 0.0 {
            continue;
        }
        for (q, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(&x[16 * j..]) {
            *q = (nearest_int(v / dl).clamp(-4, 3) + 4) as i8;
        }
    }

    // The third bit of element j goes to hmask[j % 32], bit j / 32.
    let mut hmask = [0u8; QK_K / 8];
    let mut low = [0u8; QK_K];
    for (j, &l) in levels.iter().enumerate() {
        let mut l = l as u8;
        if l > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            l -= 4;
        }
        low[j] = l;
    }
    BlockQ3K {
        hmask,
        qs: pack_2bit(&low),
        scales: packed,
        d,
    }
}

/// Packs sixteen 6-bit scale levels: low nibbles in bytes 0..8 (j and j+8 sharing a byte), the two
/// high bits of scale j in byte 8 + j%4 at bit 2·(j/4).
fn pack_q3_scales(ls: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        if j < 8 {
            s[j] = l & 0xf;
        } else {
            s[j - 8] |= (l & 0xf) << 4;
        }
        s[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    s
}

// ------------------------------------------------------------------------------- Q4_K and Q5_K

/// What differs between Q4_K and Q5_K before packing.
struct AffineKind {
    nmax: i32,
    /// The reference quantizer's search grid.
    grid: AffineGrid,
    /// ggml's Q5_K (not Q4_K) caps importance-path scale levels at 63, which only matters for
    /// levels that wrapped around from a negative search result.
    cap_weighted_levels: bool,
}

const Q4K: AffineKind = AffineKind {
    nmax: 15,
    grid: GRID_Q4K,
    cap_weighted_levels: false,
};
const Q5K: AffineKind = AffineKind {
    nmax: 31,
    grid: GRID_Q5K,
    cap_weighted_levels: true,
};

/// The shared front half of Q4_K and Q5_K: eight affine sub-blocks of 32 whose scales and mins are
/// coded in 6 bits, then every element re-rounded against the stored scales.
struct AffineSuperBlock {
    d: f16,
    dmin: f16,
    scales: [u8; 12],
    levels: [u8; QK_K],
}

#[inline(always)]
fn affine_8x32(x: &[f32], qw: Option<&[f32]>, kind: &AffineKind) -> AffineSuperBlock {
    let nmax = kind.nmax;
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (d, dmin, ls, lm) = match qw {
        None => {
            let mut w = [0f32; QK_K];
            for (ws, xs) in w.chunks_exact_mut(32).zip(x.chunks_exact(32)) {
                let sum_x2 = xs.iter().fold(0f32, |s, &v| s + v * v);
                let av_x = (sum_x2 / 32.0).sqrt();
                for (wl, xl) in ws.iter_mut().zip(xs) {
                    *wl = av_x + xl.abs();
                }
            }
            let fits = make_qkx_quants_x8(nmax, x, &w, &mut levels, kind.grid);
            for (j, fit) in fits.iter().enumerate() {
                (scales[j], mins[j]) = (fit.scale, fit.min);
            }
            let max_scale = scales.iter().fold(0f32, |m, &s| c_max(s, m));
            let max_min = mins.iter().fold(0f32, |m, &s| c_max(s, m));
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
            let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
            (to_f16(max_scale / 63.0), to_f16(max_min / 63.0), ls, lm)
        }
        Some(qw) => {
            let sigma2 = sigma2(x, 2.0);
            let mut sw = [0f32; 8];
            let mut w = [0f32; QK_K];
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let (wj, sum) = imatrix_weights::<32>(xs, &qw[32 * j..], sigma2);
                w[32 * j..32 * j + 32].copy_from_slice(&wj);
                sw[j] = sum;
            }
            let fits = make_qkx_quants_x8(nmax, x, &w, &mut levels, GRID_IMATRIX);
            for (j, fit) in fits.iter().enumerate() {
                (scales[j], mins[j]) = (fit.scale, fit.min);
            }
            let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
            let d = make_qp_quants(63, &scales, &mut ls, &sw);
            let m = make_qp_quants(63, &mins, &mut lm, &sw);
            if kind.cap_weighted_levels {
                ls = ls.map(|l| l.min(63));
                lm = lm.map(|l| l.min(63));
            }
            (to_f16(d), to_f16(m), ls, lm)
        }
    };
    let packed = pack_k4_scales(&ls, &lm);

    let (df, mf) = (d.to_f32(), dmin.to_f32());
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dl = df * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = mf * m as f32;
        for (q, &v) in levels[32 * j..32 * j + 32].iter_mut().zip(&x[32 * j..]) {
            *q = nearest_int((v + ml) / dl).clamp(0, nmax) as u8;
        }
    }
    AffineSuperBlock {
        d,
        dmin,
        scales: packed,
        levels,
    }
}

/// Packs eight 6-bit scales and mins: j < 4 in the low 6 bits of bytes j and j+4; j ≥ 4 as nibbles
/// of byte j+4 with their top two bits in bits 6-7 of bytes j-4 (scale) and j (min).
fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

#[inline(always)]
pub fn q4_k(x: &[f32], qw: Option<&[f32]>) -> BlockQ4K {
    let sb = affine_8x32(x, qw, &Q4K);
    let mut qs = [0u8; QK_K / 2];
    for (c, q) in qs.chunks_exact_mut(32).enumerate() {
        let l = &sb.levels[64 * c..];
        for (i, b) in q.iter_mut().enumerate() {
            *b = l[i] | (l[i + 32] << 4);
        }
    }
    BlockQ4K {
        d: sb.d,
        dmin: sb.dmin,
        scales: sb.scales,
        qs,
    }
}

#[inline(always)]
pub fn q5_k(x: &[f32], qw: Option<&[f32]>) -> BlockQ5K {
    let sb = affine_8x32(x, qw, &Q5K);
    let mut qs = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 8];
    for (c, q) in qs.chunks_exact_mut(32).enumerate() {
        let l = &sb.levels[64 * c..];
        for (i, b) in q.iter_mut().enumerate() {
            let (lo, hi) = (l[i], l[i + 32]);
            qh[i] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            *b = (lo & 0xf) | ((hi & 0xf) << 4);
        }
    }
    BlockQ5K {
        d: sb.d,
        dmin: sb.dmin,
        scales: sb.scales,
        qh,
        qs,
    }
}

// ---------------------------------------------------------------------------------------- Q6_K

/// Q6_K weights each sub-block's search by x² without an imatrix and by the imatrix itself (no σ²
/// term) with one.
#[inline(always)]
pub fn q6_k(x: &[f32], qw: Option<&[f32]>) -> BlockQ6K {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        let xs = &x[16 * j..16 * j + 16];
        let mut w = [0f32; 16];
        match qw {
            Some(qw) => w.copy_from_slice(&qw[16 * j..16 * j + 16]),
            None => {
                for (wl, xl) in w.iter_mut().zip(xs) {
                    *wl = xl * xl;
                }
            }
        }
        *s = make_qx_quants(32, xs, &w, &mut levels[16 * j..16 * j + 16]);
    }
    let (max_abs, max_scale) = abs_max(&scales);
    if max_abs < GROUP_MAX_EPS {
        return BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f16::ZERO,
        };
    }
    let iscale = -128.0 / max_scale;
    let d = to_f16(1.0 / iscale);
    let sc = scales.map(|s| nearest_int(iscale * s).min(127) as i8);

    let df = d.to_f32();
    for (j, &s) in sc.iter().enumerate() {
        let dl = df * s as f32;
        if dl == 0.0 {
            continue;
        }
        for (q, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(&x[16 * j..]) {
            *q = (nearest_int(v / dl).clamp(-32, 31) + 32) as i8;
        }
    }

    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for half in 0..2 {
        let l = &levels[128 * half..];
        let (ql, qh) = (&mut ql[64 * half..], &mut qh[32 * half..]);
        for i in 0..32 {
            let q = [l[i], l[i + 32], l[i + 64], l[i + 96]].map(|v| v as u8);
            ql[i] = (q[0] & 0xf) | ((q[2] & 0xf) << 4);
            ql[i + 32] = (q[1] & 0xf) | ((q[3] & 0xf) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
    BlockQ6K {
        ql,
        qh,
        scales: sc,
        d,
    }
}
