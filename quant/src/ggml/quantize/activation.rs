//! Activation quantizers (ggml's `quantize_row_q8_0_ref`, `quantize_row_q8_1_ref`,
//! `quantize_row_q8_K_ref`): what the CPU dot-product kernels turn activations into, here as the
//! reference those kernels are tested against.

use crate::ggml::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::ggml::types::{GgmlType, QK_K};
use crate::ggml::CodecError;

use super::legacy;
use super::numeric::{abs_max, c_max, nearest_int, round_c_int, to_f16};

/// Checks that `n` source elements fill exactly `blocks` blocks of `ty`.
fn check(ty: GgmlType, n: usize, blocks: usize) -> Result<(), CodecError> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(CodecError::RowNotBlockAligned { ty, n, block: bs });
    }
    if n / bs != blocks {
        return Err(CodecError::WrongByteCount {
            ty,
            n,
            want: n / bs * ty.type_size(),
            got: blocks * ty.type_size(),
        });
    }
    Ok(())
}

/// Q8_0: `d = amax/127`, `q = round(x/d)` per 32 elements.
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) -> Result<(), CodecError> {
    check(GgmlType::Q8_0, src.len(), dst.len())?;
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
        *b = legacy::q8_0(x);
    }
    Ok(())
}

/// Q8_1: Q8_0's rounding plus `s = d·Σq`, which the Q4_1/Q5_1 dot products use for the offset.
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) -> Result<(), CodecError> {
    check(GgmlType::Q8_1, src.len(), dst.len())?;
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
        let amax = x.iter().fold(0f32, |m, &v| c_max(m, v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let qs: [i8; 32] = std::array::from_fn(|j| round_c_int(x[j] * id) as i8);
        // ggml adds the pairs (j, j+16) in that order; integer sums are order-free anyway
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        *b = BlockQ8_1 {
            d: to_f16(d),
            s: to_f16(sum as f32 * d),
            qs,
        };
    }
    Ok(())
}

/// Q8_K: `d = max/-127` (f32, sign of the largest-magnitude element), `q = nearest(x/d)` capped
/// at 127, with per-16 sums.
pub fn quantize_row_q8_k(src: &[f32], dst: &mut [BlockQ8K]) -> Result<(), CodecError> {
    check(GgmlType::Q8K, src.len(), dst.len())?;
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
        let (amax, max) = abs_max(x);
        if amax == 0.0 {
            *b = BlockQ8K {
                d: 0.0,
                qs: [0; QK_K],
                bsums: [0; QK_K / 16],
            };
            continue;
        }
        let iscale = -127.0 / max;
        let qs: [i8; QK_K] = std::array::from_fn(|j| nearest_int(iscale * x[j]).min(127) as i8);
        let bsums = std::array::from_fn(|j| {
            qs[16 * j..16 * j + 16]
                .iter()
                .map(|&q| q as i32)
                .sum::<i32>() as i16
        });
        *b = BlockQ8K {
            d: 1.0 / iscale,
            qs,
            bsums,
        };
    }
    Ok(())
}
