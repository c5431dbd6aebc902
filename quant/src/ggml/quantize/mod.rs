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

use super::blocks::{
    Block, BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use super::dequant::check_row;
use super::types::GgmlType;
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
    encode(ty, src, dst, imatrix)
}

/// Encodes one checked row. The searches are written as independent lanes in element order;
/// where the CPU has AVX2 the same code runs compiled for it (wider vectors, the same IEEE
/// operations in the same order, no fused multiply-adds), so the bytes cannot differ.
fn encode(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantizeError> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { encode_avx2(ty, src, dst, imatrix) };
    }
    encode_generic(ty, src, dst, imatrix)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn encode_avx2(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantizeError> {
    encode_generic(ty, src, dst, imatrix)
}

#[inline(always)]
fn encode_generic(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantizeError> {
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
        GgmlType::Q4_0 => blocks::<Q4_0>(src, dst, imatrix),
        GgmlType::Q4_1 => blocks::<Q4_1>(src, dst, imatrix),
        GgmlType::Q5_0 => blocks::<Q5_0>(src, dst, imatrix),
        GgmlType::Q5_1 => blocks::<Q5_1>(src, dst, imatrix),
        GgmlType::Q8_0 => blocks::<Q8_0>(src, dst, imatrix),
        GgmlType::Q2K => blocks::<Q2K>(src, dst, imatrix),
        GgmlType::Q3K => blocks::<Q3K>(src, dst, imatrix),
        GgmlType::Q4K => blocks::<Q4K>(src, dst, imatrix),
        GgmlType::Q5K => blocks::<Q5K>(src, dst, imatrix),
        GgmlType::Q6K => blocks::<Q6K>(src, dst, imatrix),
        GgmlType::IQ4NL => blocks::<IQ4NL>(src, dst, imatrix),
        GgmlType::IQ4XS => blocks::<IQ4XS>(src, dst, imatrix),
        GgmlType::Q8_1 => activation_blocks(src, dst, quantize_row_q8_1)?,
        GgmlType::Q8K => activation_blocks(src, dst, quantize_row_q8_k)?,
    }
    Ok(())
}

/// One block type's encoder: the block's elements, its slice of the row's importance vector, and
/// σ² of the whole row (which only the legacy types' weighted searches use).
trait BlockEncoder {
    type Out: Block;
    fn encode(x: &[f32], qw: Option<&[f32]>, row_sigma2: f32) -> Self::Out;
}

macro_rules! encoders {
    ($($name:ident => $out:ty, |$x:ident, $qw:ident, $s2:ident| $body:expr;)*) => {$(
        struct $name;
        impl BlockEncoder for $name {
            type Out = $out;
            #[inline(always)]
            fn encode($x: &[f32], $qw: Option<&[f32]>, $s2: f32) -> $out {
                $body
            }
        }
    )*};
}

encoders! {
    Q4_0 => BlockQ4_0, |x, qw, s2| legacy::q4_0(x, qw.map(|w| (w, s2)));
    Q4_1 => BlockQ4_1, |x, qw, s2| legacy::q4_1(x, qw.map(|w| (w, s2)));
    Q5_0 => BlockQ5_0, |x, qw, s2| legacy::q5_0(x, qw.map(|w| (w, s2)));
    Q5_1 => BlockQ5_1, |x, qw, s2| legacy::q5_1(x, qw.map(|w| (w, s2)));
    Q8_0 => BlockQ8_0, |x, _qw, _s2| legacy::q8_0(x);
    Q2K => BlockQ2K, |x, qw, _s2| kquants::q2_k(x, qw);
    Q3K => BlockQ3K, |x, qw, _s2| kquants::q3_k(x, qw);
    Q4K => BlockQ4K, |x, qw, _s2| kquants::q4_k(x, qw);
    Q5K => BlockQ5K, |x, qw, _s2| kquants::q5_k(x, qw);
    Q6K => BlockQ6K, |x, qw, _s2| kquants::q6_k(x, qw);
    IQ4NL => BlockIQ4NL, |x, qw, _s2| iq4::iq4_nl(x, qw);
    IQ4XS => BlockIQ4XS, |x, qw, _s2| iq4::iq4_xs(x, qw);
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

/// Encodes every block of a row and stores its bytes; the row was checked, so the chunks line up
/// exactly. The legacy types' weighted searches take σ² over the whole row.
#[inline(always)]
fn blocks<E: BlockEncoder>(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let bs = <E::Out as Block>::TYPE.block_size();
    let row_sigma2 = match imatrix {
        Some(_) => legacy::row_sigma2(src),
        None => 0.0,
    };
    let chunks = src
        .chunks_exact(bs)
        .zip(dst.chunks_exact_mut(size_of::<E::Out>()));
    for (i, (x, out)) in chunks.enumerate() {
        // a match, not Option::map: a closure would be compiled outside the AVX2 build
        #[allow(clippy::manual_map)]
        let qw = match imatrix {
            Some(w) => Some(&w[bs * i..bs * (i + 1)]),
            None => None,
        };
        out.copy_from_slice(bytemuck::bytes_of(&E::encode(x, qw, row_sigma2)));
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
