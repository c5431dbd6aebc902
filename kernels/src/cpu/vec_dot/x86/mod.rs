//! x86_64 kernels. The AVX2 level (+FMA, F16C) covers every type with 256-bit vectors. The
//! AVX-512 level (F, BW, VL, VNNI) doubles the width where it measured faster: 32-element block
//! types take two blocks per `vpdpbusd`, K-quants two 32-element groups per
//! `vpmaddubsw`/`vpmaddwd`, float weights 16 lanes per FMA.

use std::arch::x86_64::*;

use super::TileFn;
use crate::cpu::features::Isa;
use quant::ggml::GgmlType;

mod block32;
mod float;
mod interleaved;
mod kquant;

/// Defines `#[target_feature]` entry points with the [`TileFn`] signature that pick the
/// monomorphized body for the number of activation rows, so the token loop inside is unrolled.
/// Feature strings: AVX2 level "avx2,fma,f16c"; AVX-512 level adds
/// "avx512f,avx512bw,avx512vl,avx512vnni".
macro_rules! tile_entries {
    ($features:literal; $($name:ident => $body:ident::<$($g:ty),*>;)*) => {$(
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &[u8], x: &[u8], x_stride: usize, nt: usize) -> [f32; MAX_NT] {
            match nt {
                1 => $body::<$($g,)* 1>(w, x, x_stride),
                2 => $body::<$($g,)* 2>(w, x, x_stride),
                3 => $body::<$($g,)* 3>(w, x, x_stride),
                _ => $body::<$($g,)* 4>(w, x, x_stride),
            }
        }
    )*};
}
pub(crate) use tile_entries;

pub(super) fn kernel(ty: GgmlType, isa: Isa) -> Option<TileFn> {
    match isa {
        Isa::Avx512 => block32::kernel_avx512(ty)
            .or_else(|| kquant::kernel_avx512(ty))
            .or_else(|| float::kernel_avx512(ty))
            .or_else(|| kernel(ty, Isa::Avx2)),
        Isa::Avx2 => block32::kernel_avx2(ty)
            .or_else(|| kquant::kernel_avx2(ty))
            .or_else(|| float::kernel_avx2(ty)),
        _ => None,
    }
}

pub(super) fn group_kernel(ty: GgmlType) -> Option<super::GroupFn> {
    interleaved::kernel(ty)
}

/// The f16 at `p` (unaligned) as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// The f32 at `p` (unaligned).
#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of packed nibbles to 32 bytes: the low nibbles, then the high nibbles (the order of
/// elements in ggml's 32-element 4-bit blocks).
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let b = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// A little-endian u32 at `p` to 32 bytes: 0xFF where bit j is set, 0 elsewhere.
#[inline(always)]
unsafe fn bits32(p: *const u8) -> __m256i {
    let w = (p as *const u32).read_unaligned();
    // Byte j takes source byte j / 8, then tests bit j % 8 of it.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(w as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
}

/// ggml's IQ4 codebook in both 128-bit lanes, for `vpshufb` lookups.
#[inline(always)]
unsafe fn iq4_table() -> __m256i {
    let t = _mm_loadu_si128(quant::ggml::blocks::IQ4_VALUES.as_ptr() as *const __m128i);
    _mm256_set_m128i(t, t)
}
