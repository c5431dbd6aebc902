//! Test inputs for the kernels: weight rows of every ggml type (random bytes with sane scales, and
//! edge-case patterns), activation rows, and the float64 oracle built on quant's reference
//! dequantizers.
#![allow(dead_code)]

use half::{bf16, f16};
use kernels::cpu::q8::ActFormat;
use quant::ggml::blocks::*;
use quant::ggml::{dequantize_row, GgmlType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::mem::offset_of;

pub const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4NL,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4XS,
];

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Byte offsets of a block's f16 scale fields (d, and m/dmin where the type has one).
pub fn scale_fields(ty: GgmlType) -> Vec<usize> {
    use GgmlType::*;
    match ty {
        Q4_0 => vec![offset_of!(BlockQ4_0, d)],
        Q4_1 => vec![offset_of!(BlockQ4_1, d), offset_of!(BlockQ4_1, m)],
        Q5_0 => vec![offset_of!(BlockQ5_0, d)],
        Q5_1 => vec![offset_of!(BlockQ5_1, d), offset_of!(BlockQ5_1, m)],
        Q8_0 => vec![offset_of!(BlockQ8_0, d)],
        IQ4NL => vec![offset_of!(BlockIQ4NL, d)],
        Q2K => vec![offset_of!(BlockQ2K, d), offset_of!(BlockQ2K, dmin)],
        Q3K => vec![offset_of!(BlockQ3K, d)],
        Q4K => vec![offset_of!(BlockQ4K, d), offset_of!(BlockQ4K, dmin)],
        Q5K => vec![offset_of!(BlockQ5K, d), offset_of!(BlockQ5K, dmin)],
        Q6K => vec![offset_of!(BlockQ6K, d)],
        IQ4XS => vec![offset_of!(BlockIQ4XS, d)],
        _ => vec![],
    }
}

/// Byte ranges that hold a block's additive minimum (scale fields and packed sub-block mins):
/// zeroing everything else leaves a block that dequantizes to just its offsets.
/// (start, end) byte ranges.
fn min_fields(ty: GgmlType) -> Option<&'static [(usize, usize)]> {
    use GgmlType::*;
    match ty {
        Q4_1 | Q5_1 => Some(&[(0, 4)]),
        Q2K => Some(&[(0, 16), (80, 84)]),
        Q4K | Q5K => Some(&[(0, 16)]),
        _ => None,
    }
}

/// A sane random scale: magnitude 1e-3..1e-1, either sign when `signed`.
pub fn random_scale(rng: &mut StdRng, signed: bool) -> f32 {
    let mag = 10f32.powf(rng.random_range(-3.0..-1.0));
    if signed && rng.random_bool(0.5) {
        -mag
    } else {
        mag
    }
}

fn set_f16(bytes: &mut [u8], at: usize, v: f32) {
    bytes[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// A row of `cols` elements of type `ty` with random quant bytes and random sane scales.
pub fn random_row(ty: GgmlType, cols: usize, rng: &mut StdRng, negative_scales: bool) -> Vec<u8> {
    match ty {
        GgmlType::F32 => (0..cols)
            .flat_map(|_| rng.random_range(-1f32..1.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..cols)
            .flat_map(|_| f16::from_f32(rng.random_range(-1f32..1.0)).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..cols)
            .flat_map(|_| bf16::from_f32(rng.random_range(-1f32..1.0)).to_le_bytes())
            .collect(),
        _ => {
            let mut bytes: Vec<u8> = (0..ty.row_bytes(cols).unwrap())
                .map(|_| rng.random())
                .collect();
            for block in bytes.chunks_exact_mut(ty.type_size()) {
                for at in scale_fields(ty) {
                    set_f16(block, at, random_scale(rng, negative_scales));
                }
            }
            bytes
        }
    }
}

/// A row whose every block has all non-scale bytes equal to `fill` and scales `d`: constant
/// blocks, and with 0x00/0xFF/0x80/0x7F/0x88 fills the extreme quants and sub-block scales.
pub fn pattern_row(ty: GgmlType, cols: usize, fill: u8, d: f32) -> Vec<u8> {
    if !ty.is_quantized() {
        let v = (fill as f32 - 128.0) / 128.0;
        return random_like_float(ty, &vec![v; cols]);
    }
    let mut bytes = vec![fill; ty.row_bytes(cols).unwrap()];
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for at in scale_fields(ty) {
            set_f16(block, at, d);
        }
    }
    bytes
}

/// Float values stored as `ty` (F32/F16/BF16).
pub fn random_like_float(ty: GgmlType, v: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        GgmlType::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => unreachable!("not a float type"),
    }
}

pub fn dequant(ty: GgmlType, row: &[u8], cols: usize) -> Vec<f64> {
    let mut out = vec![0f32; cols];
    dequantize_row(ty, row, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// The dequantized additive minimum of each element (0 for types without one).
pub fn offsets(ty: GgmlType, row: &[u8], cols: usize) -> Vec<f64> {
    let Some(keep) = min_fields(ty) else {
        return vec![0.0; cols];
    };
    let mut only_mins = vec![0u8; row.len()];
    for (dst, src) in only_mins
        .chunks_exact_mut(ty.type_size())
        .zip(row.chunks_exact(ty.type_size()))
    {
        for &(a, b) in keep {
            dst[a..b].copy_from_slice(&src[a..b]);
        }
    }
    dequant(ty, &only_mins, cols)
}

/// Activation values as the kernels see them: the dequantized 8-bit blocks (or the f32 values).
pub fn dequant_acts(fmt: ActFormat, row: &[u8], cols: usize) -> Vec<f64> {
    let bytes = &row[..fmt.blocks_bytes(cols)];
    match fmt {
        ActFormat::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes)
            .into_iter()
            .map(f64::from)
            .collect(),
        ActFormat::Q8_0 => dequant(GgmlType::Q8_0, bytes, cols),
        ActFormat::Q8_1 => bytemuck::pod_collect_to_vec::<u8, BlockQ8_1>(bytes)
            .iter()
            .flat_map(|b| b.qs.map(|q| q as f64 * b.d.to_f64()))
            .collect(),
        ActFormat::Q8K => dequant(GgmlType::Q8K, bytes, cols),
    }
}

/// Σ over blocks of |m|·|s|: Q8_1's s = d·Σq is stored as f16 and from the unrounded d, so the
/// m·s term of Q4_1/Q5_1 differs from m·Σ(dequantized a) by up to ~2⁻¹⁰ of it.
fn q8_1_slack(ty: GgmlType, w: &[u8], acts: &[u8], cols: usize) -> f64 {
    if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        return 0.0;
    }
    let s =
        bytemuck::pod_collect_to_vec::<u8, BlockQ8_1>(&acts[..ActFormat::Q8_1.blocks_bytes(cols)]);
    w.chunks_exact(ty.type_size())
        .zip(&s)
        .map(|(b, a)| {
            let m = f16::from_le_bytes([b[2], b[3]]).to_f64();
            (m * a.s.to_f64()).abs() * 2f64.powi(-10)
        })
        .sum()
}

/// The exact (float64) dot of the dequantized weight row and activation row, and the bound on
/// how far an f32 kernel may be from it.
///
/// The kernels form exact integer sums per block and then round a few times per block (scale
/// products, conversion, the additive-minimum term) and once per block while accumulating; the
/// reference dequantizer also rounds each weight 2-3 times. With u = 2⁻²⁴ the standard bound
/// for such a sum is γ_{k} · Σ|terms| with k ≈ blocks + 6; we allow (blocks + 10)·2u. The terms'
/// magnitudes include both parts of the weights with a minimum (scale part and offset part are
/// rounded separately before they cancel), hence Σ|a|·(|w − o| + |o|).
pub fn oracle(ty: GgmlType, w: &[u8], fmt: ActFormat, acts: &[u8], cols: usize) -> (f64, f64) {
    let wd = dequant(ty, w, cols);
    let o = offsets(ty, w, cols);
    let ad = dequant_acts(fmt, acts, cols);
    let exact: f64 = wd.iter().zip(&ad).map(|(w, a)| w * a).sum();
    let mag: f64 = wd
        .iter()
        .zip(&o)
        .zip(&ad)
        .map(|((w, o), a)| a.abs() * ((w - o).abs() + o.abs()))
        .sum();
    // Float weights accumulate one element per lane step: cols / 8 steps at the narrowest.
    let steps = if ty.is_quantized() {
        cols / ty.block_size()
    } else {
        cols / 8 + 8
    };
    let tol =
        (steps + 10) as f64 * f32::EPSILON as f64 * mag + q8_1_slack(ty, w, acts, cols) + 1e-30;
    (exact, tol)
}

/// Activation rows of `cols` values: random, with edge cases by `kind`.
pub fn act_row(kind: usize, cols: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1f32..1.0)).collect();
    match kind % 6 {
        0 => {}
        1 => x.iter_mut().for_each(|v| *v = 0.0),
        2 => {
            // One outlier: other values in its block quantize to small integers.
            let i = rng.random_range(0..cols);
            x[i] = 1000.0;
        }
        3 => x.iter_mut().for_each(|v| *v = 0.37),
        4 => x
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { 3.0 } else { -3.0 }),
        _ => x.iter_mut().for_each(|v| *v = -v.abs() * 50.0),
    }
    x
}
