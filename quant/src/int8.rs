//! Symmetric int8: weights per output channel as compressed-tensors quantizes them, and
//! activations per token the way vLLM quantizes them at run time. These are the reference the
//! runtime's int8 kernels are tested against.
//!
//! compressed-tensors (`calculate_qparams`, `_quantize`): the range always includes 0, the
//! scale is max|w| / ((qmax − qmin)/2) = max|w|/127.5 in the module's dtype, q =
//! clamp(round_half_even(w/scale), −128, 127), the quotient rounded to the model's dtype first
//! as PyTorch computes it (see `quantize_weight`).
//!
//! vLLM (`dynamic_scaled_int8_quant_kernel`, csrc/quantization/compressed_tensors/
//! int8_quant_kernels.cu): per token, amax = max|x| (NaN ignored, fmaxf), scale = amax/127,
//! q = cvt.rni.sat.s8.f32(x · (127/amax)): round half to even, saturate, NaN → 0; an all-zero
//! token gets scale 0 and zeros.

use crate::hf::compressed_tensors::ScaleDtype;

/// compressed-tensors' symmetric int8 divisor: (qmax − qmin)/2 = (127 − (−128))/2.
pub const WEIGHT_DIVISOR: f32 = 127.5;

/// The int8 weight scale of a range whose largest magnitude is `amax`.
pub fn weight_scale(amax: f32, dtype: ScaleDtype) -> f32 {
    dtype.scale_from_range(amax, WEIGHT_DIVISOR)
}

/// round_half_even(v) clamped to [−128, 127]; NaN → 0 (the cast's NaN).
#[inline]
pub fn round_saturate(v: f32) -> i8 {
    // Clamped to the integer bounds first (which rounds the same), v + 1.5·2²³ is rounded to
    // an integer, ties to even, in the default rounding mode, and that integer is the low bits
    // of the sum's mantissa in two's complement: no libm rint (baseline x86-64 has no
    // roundss) and no saturating float-to-int cast per lane, so loops over it vectorize.
    const MAGIC: f32 = 12_582_912.0;
    let c = if v.is_nan() {
        0.0
    } else {
        v.clamp(-128.0, 127.0)
    };
    (c + MAGIC).to_bits() as u8 as i8
}

/// One weight quantized with `scale` as compressed-tensors computes it in the model's dtype:
/// w/scale (f32 division) rounded to `dtype`, then round half to even and clamp.
#[inline]
pub fn quantize_weight(w: f32, scale: f32, dtype: ScaleDtype) -> i8 {
    round_saturate(dtype.round(w / scale))
}

/// A row quantized with its own scale (per output channel); returns the scale.
pub fn quantize_row(w: &[f32], dtype: ScaleDtype, q: &mut [i8]) -> f32 {
    assert_eq!(w.len(), q.len());
    let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = weight_scale(amax, dtype);
    // One loop per dtype, so each vectorizes without a dispatch per weight.
    match dtype {
        ScaleDtype::F32 => quantize_each(w, q, |v| quantize_weight(v, scale, ScaleDtype::F32)),
        ScaleDtype::F16 => quantize_each(w, q, |v| quantize_weight(v, scale, ScaleDtype::F16)),
        ScaleDtype::BF16 => quantize_each(w, q, |v| quantize_weight(v, scale, ScaleDtype::BF16)),
    }
    scale
}

#[inline(always)]
fn quantize_each(w: &[f32], q: &mut [i8], f: impl Fn(f32) -> i8) {
    for (q, &v) in q.iter_mut().zip(w) {
        *q = f(v);
    }
}

/// vLLM's dynamic per-token activation quantization of one token; returns the scale.
pub fn quantize_token_dynamic(x: &[f32], q: &mut [i8]) -> f32 {
    assert_eq!(x.len(), q.len());
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_saturate(v * inv);
    }
    amax / 127.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_float64_round_half_even() {
        let grid = (-1100..=1100).map(|i| i as f32 / 8.0);
        let odd = [
            0.5,
            -0.5,
            1.5,
            2.5,
            126.5,
            127.49,
            -127.5,
            -128.5,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -0.0,
        ];
        for v in grid.chain(odd) {
            let want = (v as f64).round_ties_even().clamp(-128.0, 127.0) as i8;
            assert_eq!(round_saturate(v), want, "{v}");
        }
        assert_eq!(round_saturate(f32::NAN), 0);
    }

    #[test]
    fn weights_round_half_even_and_clamp() {
        // amax/127.5 puts the largest magnitude at ±127.5: +127.5 → 128 → 127, −127.5 → −128.
        let mut q = [0i8; 5];
        let s = quantize_row(&[127.5, -127.5, 2.5, 3.5, -0.5], ScaleDtype::F32, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, -128, 2, 4, 0]);
        assert_eq!(
            quantize_row(&[0.0; 5], ScaleDtype::BF16, &mut q),
            ScaleDtype::BF16.eps()
        );
        assert_eq!(q, [0; 5]);
    }

    #[test]
    fn vllm_tokens() {
        let mut q = [0i8; 4];
        let s = quantize_token_dynamic(&[1.0, -2.0, 0.5, f32::NAN], &mut q);
        assert_eq!(s, 2.0 / 127.0);
        // 0.5·63.5 = 31.75 → 32; NaN → 0.
        assert_eq!(q, [64, -127, 32, 0]);
        assert_eq!(quantize_token_dynamic(&[0.0; 4], &mut q), 0.0);
        assert_eq!(q, [0; 4]);
    }
}
