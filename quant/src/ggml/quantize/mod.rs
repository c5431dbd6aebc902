//! Quantizers producing exactly the bytes llama-quantize writes (llama.cpp c392e50, ggml's
//! scalar reference code), for every weight type this project supports, with and without an
//! importance matrix, plus the reference activation quantizers.
//!
//! llama-quantize calls ggml's `quantize_<type>` per chunk of rows. Without an importance matrix
//! those run the `quantize_row_<type>_ref` rounding (no search) for every type except IQ4_NL and
//! IQ4_XS, which always search; with one they run the weighted `_impl` searches, except Q8_0
//! (which ignores it) and the float types.

mod activation;
mod iq4;
mod kquants;
mod legacy;
mod numeric;
mod search;
mod validate;

#[cfg(test)]
mod tests;

use bytemuck::Pod;

use super::blocks::Block;
use super::dequant::check_row;
use super::types::{GgmlType, QK_K};
use super::CodecError;

pub use activation::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
pub use numeric::{nearest_int, to_f16};
pub use validate::first_non_finite;

/// Why a row could not be quantized.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantizeError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("{ty}: the importance vector has {got} values for a row of {n}")]
    ImatrixLength { ty: GgmlType, n: usize, got: usize },
    #[error("{n} elements are not a whole number of {n_per_row}-element rows")]
    PartialRow { n: usize, n_per_row: usize },
}

/// Quantizes one row of `src.len()` elements to `ty` into `dst` (exactly one row's bytes).
/// `imatrix` holds the row's per-column importance (llama-quantize's imatrix entry for this
/// tensor, or this expert's slice of it); types without a weighted search ignore it.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantizeError> {
    let n = src.len();
    check_row(ty, dst, n)?;
    if let Some(w) = imatrix {
        if w.len() != n {
            return Err(QuantizeError::ImatrixLength {
                ty,
                n,
                got: w.len(),
            });
        }
    }
    let super_block = |i: usize| imatrix.map(|w| &w[QK_K * i..QK_K * (i + 1)]);
    // The legacy searches take σ² over the whole row.
    let row_sigma2 = imatrix.map(|_| legacy::row_sigma2(src)).unwrap_or(0.0);
    let legacy_weights = |i: usize| imatrix.map(|w| (&w[32 * i..32 * (i + 1)], row_sigma2));
    match ty {
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&to_f16(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&to_bf16_bits(*v).to_le_bytes());
            }
        }
        GgmlType::Q4_0 => blocks(src, dst, |i, x| legacy::q4_0(x, legacy_weights(i))),
        GgmlType::Q4_1 => blocks(src, dst, |i, x| legacy::q4_1(x, legacy_weights(i))),
        GgmlType::Q5_0 => blocks(src, dst, |i, x| legacy::q5_0(x, legacy_weights(i))),
        GgmlType::Q5_1 => blocks(src, dst, |i, x| legacy::q5_1(x, legacy_weights(i))),
        GgmlType::Q8_0 => blocks(src, dst, |_, x| legacy::q8_0(x)),
        GgmlType::Q2K => blocks(src, dst, |i, x| kquants::q2_k(x, super_block(i))),
        GgmlType::Q3K => blocks(src, dst, |i, x| kquants::q3_k(x, super_block(i))),
        GgmlType::Q4K => blocks(src, dst, |i, x| kquants::q4_k(x, super_block(i))),
        GgmlType::Q5K => blocks(src, dst, |i, x| kquants::q5_k(x, super_block(i))),
        GgmlType::Q6K => blocks(src, dst, |i, x| kquants::q6_k(x, super_block(i))),
        GgmlType::IQ4NL => blocks(src, dst, |i, x| {
            iq4::iq4_nl(x, imatrix.map(|w| &w[32 * i..32 * (i + 1)]))
        }),
        GgmlType::IQ4XS => blocks(src, dst, |i, x| iq4::iq4_xs(x, super_block(i))),
        GgmlType::Q8_1 => activation_blocks(src, dst, quantize_row_q8_1)?,
        GgmlType::Q8K => activation_blocks(src, dst, quantize_row_q8_k)?,
    }
    Ok(())
}

/// Quantizes consecutive rows of `n_per_row` elements (`src.len()` a multiple of it) into `dst`,
/// every row with the same importance vector.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantizeError> {
    let row_bytes = ty
        .row_bytes(n_per_row)
        .ok_or(CodecError::RowNotBlockAligned {
            ty,
            n: n_per_row,
            block: ty.block_size(),
        })?;
    let n_rows = src.len().checked_div(n_per_row).unwrap_or(0);
    if n_rows * n_per_row != src.len() {
        return Err(QuantizeError::PartialRow {
            n: src.len(),
            n_per_row,
        });
    }
    if dst.len() != n_rows * row_bytes {
        let (want, got) = (n_rows * row_bytes, dst.len());
        let n = src.len();
        return Err(CodecError::WrongByteCount { ty, n, want, got }.into());
    }
    if n_rows == 0 {
        return Ok(());
    }
    for (x, out) in src
        .chunks_exact(n_per_row)
        .zip(dst.chunks_exact_mut(row_bytes))
    {
        quantize_row(ty, x, out, imatrix)?;
    }
    Ok(())
}

/// ggml's fp32 -> bf16: round to nearest even, NaN forced quiet.
fn to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// Runs `f(block_index, block_elements)` over a row and stores each block's bytes. The row was
/// checked, so the chunks line up exactly.
fn blocks<B: Block>(src: &[f32], dst: &mut [u8], f: impl Fn(usize, &[f32]) -> B) {
    let bs = B::TYPE.block_size();
    let chunks = src
        .chunks_exact(bs)
        .zip(dst.chunks_exact_mut(size_of::<B>()));
    for (i, (x, out)) in chunks.enumerate() {
        out.copy_from_slice(bytemuck::bytes_of(&f(i, x)));
    }
}

/// Runs a block-typed activation quantizer into a byte buffer of arbitrary alignment.
fn activation_blocks<B: Pod>(
    src: &[f32],
    dst: &mut [u8],
    f: fn(&[f32], &mut [B]) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let mut tmp: Vec<B> = vec![B::zeroed(); dst.len() / size_of::<B>()];
    f(src, &mut tmp)?;
    dst.copy_from_slice(bytemuck::cast_slice(&tmp));
    Ok(())
}
