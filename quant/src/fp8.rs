//! FP8 E4M3 as PyTorch's `float8_e4m3fn` and the OCP spec define it: 1 sign, 4 exponent (bias 7)
//! and 3 mantissa bits, no infinities, one NaN per sign (S.1111.111), largest finite ±448,
//! smallest subnormal 2⁻⁹. Encoding rounds to nearest, ties to even, and saturates finite
//! overflow and ±∞ to ±448 (CUDA's `__NV_SATFINITE`); NaN stays NaN.
//!
//! Also the quantizers around the format: weight scales as compressed-tensors computes them, and
//! activations quantized at run time the way vLLM's kernels do (`scaled_fp8_quant`,
//! `per_token_group_quant_fp8`), the reference the runtime's kernels are tested against.

use crate::hf::compressed_tensors::ScaleDtype;

/// Largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// The positive NaN pattern (0xFF is the negative one).
pub const E4M3_NAN: u8 = 0x7F;

/// vLLM's floor on a dynamic per-token scale (`min_scaling_factor<float8_e4m3fn>`: 1/(448·512)),
/// so an all-zero token divides by a finite number.
pub const E4M3_MIN_TOKEN_SCALE: f32 = 1.0 / (448.0 * 512.0);

/// vLLM's floor on a per-token-group amax (`per_token_group_quant_fp8`'s eps).
pub const GROUP_AMAX_EPS: f32 = 1e-10;

const fn decode(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((b >> 3) & 0xF) as i32;
    let m = (b & 7) as f32;
    if e == 0xF && b & 7 == 7 {
        return f32::NAN;
    }
    let mag = if e == 0 {
        m / 8.0 / 64.0
    } else {
        let mut p = 1.0f32;
        let mut k = e - 7;
        while k > 0 {
            p *= 2.0;
            k -= 1;
        }
        while k < 0 {
            p /= 2.0;
            k += 1;
        }
        (1.0 + m / 8.0) * p
    };
    sign * mag
}

/// Every E4M3 code's value (the runtime's decode table).
pub static E4M3_TO_F32: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = decode(i as u8);
        i += 1;
    }
    t
};

#[inline]
pub fn e4m3_to_f32(b: u8) -> f32 {
    E4M3_TO_F32[b as usize]
}

/// Whether `b` is one of the two NaN codes.
#[inline]
pub fn e4m3_is_nan(b: u8) -> bool {
    b & 0x7F == E4M3_NAN
}

/// The E4M3 code nearest to `x` (ties to even), saturating at ±448.
pub fn e4m3_from_f64(x: f64) -> u8 {
    let sign = ((x.to_bits() >> 63) as u8) << 7;
    if x.is_nan() {
        return sign | E4M3_NAN;
    }
    let a = x.abs();
    if a > E4M3_MAX as f64 {
        return sign | 0x7E;
    }
    // Below the smallest normal (2⁻⁶) the codes are multiples of 2⁻⁹; code 8 is 2⁻⁶ itself.
    if a < 1.0 / 64.0 {
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    // Normal: keep 3 of f64's 52 mantissa bits, rounding half to even on the bit pattern (a
    // mantissa carry moves into the exponent, as it should), then rebias 1023 → 7.
    let u = a.to_bits();
    let half_minus_one = (1u64 << 48) - 1;
    let rounded = (u + half_minus_one + ((u >> 49) & 1)) >> 49;
    (rounded - ((1023 - 7) << 3)) as u8 | sign
}

/// The E4M3 code nearest to an f32 (ties to even), saturating at ±448: [`e4m3_from_f64`]'s
/// algorithm on f32's bit pattern (the run-time activation path).
#[inline]
pub fn e4m3_from_f32(x: f32) -> u8 {
    let u = x.to_bits();
    let sign = ((u >> 31) as u8) << 7;
    let a = u & 0x7FFF_FFFF;
    if a > 0x7F80_0000 {
        return sign | E4M3_NAN;
    }
    if a > E4M3_MAX.to_bits() {
        return sign | 0x7E;
    }
    if a < (1.0f32 / 64.0).to_bits() {
        return sign | (f32::from_bits(a) * 512.0).round_ties_even() as u8;
    }
    let rounded = (a + ((1 << 19) - 1) + ((a >> 20) & 1)) >> 20;
    (rounded - ((127 - 7) << 3)) as u8 | sign
}

/// The FP8 weight scale compressed-tensors computes from a range's largest magnitude:
/// amax/448 in f32, rounded to the scale's dtype; zero becomes the dtype's epsilon (no division
/// by zero at dequantization).
pub fn weight_scale(amax: f32, dtype: ScaleDtype) -> f32 {
    dtype.scale_from_range(amax, E4M3_MAX)
}

/// One weight quantized with `scale` as compressed-tensors computes it in the model's dtype:
/// the quotient w/scale rounded to `dtype` (PyTorch divides bf16 tensors in f32 and rounds the
/// result to bf16), then to the nearest E4M3, saturating at ±448. Rounding twice is what makes
/// our codes byte-identical to llm-compressor's.
#[inline]
pub fn quantize_weight(w: f32, scale: f32, dtype: ScaleDtype) -> u8 {
    e4m3_from_f32(dtype.round(w / scale))
}

/// vLLM's `scaled_fp8_conversion`: clamp with fmin/fmax (a NaN input becomes +448) and cast.
#[inline]
#[allow(clippy::manual_clamp)] // clamp() keeps NaN; fmin/fmax semantics are the point here
fn vllm_conversion(x: f32) -> u8 {
    e4m3_from_f32(x.min(E4M3_MAX).max(-E4M3_MAX))
}

/// The largest |x| ignoring NaN (fmaxf semantics).
fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// vLLM's `dynamic_per_token_scaled_fp8_quant` of one token: scale = max(amax/448, 1/(448·512)),
/// q = fp8(clamp(x / scale)). Returns the scale.
pub fn quantize_token_dynamic(x: &[f32], q: &mut [u8]) -> f32 {
    assert_eq!(x.len(), q.len());
    let scale = (amax(x) / E4M3_MAX).max(E4M3_MIN_TOKEN_SCALE);
    for (q, &v) in q.iter_mut().zip(x) {
        *q = vllm_conversion(v / scale);
    }
    scale
}

/// vLLM's static `scaled_fp8_quant` with a calibrated per-tensor scale: q = fp8(clamp(x·(1/s))).
/// Returns how many values lay beyond what the scale represents (|x·(1/s)| > 448, or NaN).
pub fn quantize_static(x: &[f32], scale: f32, q: &mut [u8]) -> usize {
    assert_eq!(x.len(), q.len());
    let inv = 1.0 / scale;
    let mut beyond = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        let y = v * inv;
        beyond += (y.is_nan() || y.abs() > E4M3_MAX) as usize;
        *q = vllm_conversion(y);
    }
    beyond
}

/// vLLM's `per_token_group_quant_fp8` of one token in groups of `group` columns (the last group
/// may be shorter): scale = max(amax, 1e-10)/448 per group, q = fp8(clamp(x / scale)).
pub fn quantize_token_groups(x: &[f32], group: usize, q: &mut [u8], scales: &mut [f32]) {
    assert_eq!(x.len(), q.len());
    assert_eq!(scales.len(), x.len().div_ceil(group));
    for ((x, q), s) in x.chunks(group).zip(q.chunks_mut(group)).zip(scales) {
        *s = amax(x).max(GROUP_AMAX_EPS) / E4M3_MAX;
        for (q, &v) in q.iter_mut().zip(x) {
            *q = vllm_conversion(v / *s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_format_landmarks() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert!(e4m3_to_f32(0x80) == 0.0 && e4m3_to_f32(0x80).is_sign_negative());
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
        assert_eq!((0..=255u8).filter(|b| e4m3_is_nan(*b)).count(), 2);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if v.is_nan() {
                assert!(e4m3_is_nan(e4m3_from_f32(v)));
            } else {
                assert_eq!(e4m3_from_f32(v), b, "code {b:#04x} = {v}");
            }
        }
    }

    #[test]
    fn ties_go_to_even_and_overflow_saturates() {
        // 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): even mantissa wins.
        assert_eq!(e4m3_from_f32(1.0625), 0x38);
        assert_eq!(e4m3_from_f32(1.1875), 0x3A);
        // 464 is halfway between 448 and the (absent) 480.
        assert_eq!(e4m3_from_f32(464.0), 0x7E);
        assert_eq!(e4m3_from_f32(1e9), 0x7E);
        assert_eq!(e4m3_from_f32(f32::NEG_INFINITY), 0xFE);
        // Half the smallest subnormal rounds to (signed) zero, a bit more rounds up.
        assert_eq!(e4m3_from_f32(2f32.powi(-10)), 0x00);
        assert_eq!(e4m3_from_f32(-2f32.powi(-10)), 0x80);
        assert_eq!(e4m3_from_f32(2f32.powi(-10) * 1.01), 0x01);
        // Subnormal rounding up into the smallest normal.
        assert_eq!(e4m3_from_f32(7.5 * 2f32.powi(-9)), 0x08);
    }

    #[test]
    fn vllm_activation_quantizers() {
        let x = [0.5f32, -3.0, 2.0, f32::NAN];
        let mut q = [0u8; 4];
        let s = quantize_token_dynamic(&x, &mut q);
        assert_eq!(s, 3.0 / 448.0);
        assert_eq!(q[1], 0xFE);
        assert_eq!(q[3], 0x7E, "vLLM's fmin/fmax clamp turns NaN into +448");
        let s = quantize_token_dynamic(&[0.0; 4], &mut q);
        assert_eq!((s, q), (E4M3_MIN_TOKEN_SCALE, [0; 4]));
        let beyond = quantize_static(&[1.0, 10.0, -10.0], 1.0 / 100.0, &mut q[..3]);
        assert_eq!((beyond, q[1], q[2]), (2, 0x7E, 0xFE));
        let mut scales = [0f32; 2];
        quantize_token_groups(&[1.0, -2.0, 0.0], 2, &mut q[..3], &mut scales);
        assert_eq!(scales, [2.0 / 448.0, GROUP_AMAX_EPS / 448.0]);
    }
}
