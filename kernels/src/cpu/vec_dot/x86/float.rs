//! F32, F16 and BF16 weights against f32 activations. Each weight vector is converted once
//! (F16C for f16, a 16-bit shift for bf16) and used for every token row; two vectors per step
//! keep enough independent FMAs in flight for a single row.

use std::arch::x86_64::*;

use super::{hsum_ps, tile_entries};
use crate::cpu::vec_dot::{TileFn, MAX_NT};
use quant::ggml::GgmlType;

/// A float vector width.
trait Lanes {
    type V: Copy;
    const N: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn f32s(p: *const u8) -> Self::V;
    unsafe fn f16s(p: *const u8) -> Self::V;
    unsafe fn bf16s(p: *const u8) -> Self::V;
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn hsum(v: Self::V) -> f32;
}

struct Ymm;
impl Lanes for Ymm {
    type V = __m256;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn f32s(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn bf16s(p: *const u8) -> __m256 {
        let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(w, 16))
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        hsum_ps(v)
    }
}

struct Zmm;
impl Lanes for Zmm {
    type V = __m512;
    const N: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn f32s(p: *const u8) -> __m512 {
        _mm512_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn bf16s(p: *const u8) -> __m512 {
        let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32(w, 16))
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }
}

/// A float weight element type.
trait Elem {
    const BYTES: usize;
    unsafe fn load<L: Lanes>(p: *const u8) -> L::V;
    fn scalar(p: &[u8]) -> f32;
}

struct F32;
impl Elem for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const u8) -> L::V {
        L::f32s(p)
    }
    fn scalar(p: &[u8]) -> f32 {
        f32::from_le_bytes([p[0], p[1], p[2], p[3]])
    }
}

struct F16;
impl Elem for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const u8) -> L::V {
        L::f16s(p)
    }
    fn scalar(p: &[u8]) -> f32 {
        half::f16::from_le_bytes([p[0], p[1]]).to_f32()
    }
}

struct BF16;
impl Elem for BF16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const u8) -> L::V {
        L::bf16s(p)
    }
    fn scalar(p: &[u8]) -> f32 {
        half::bf16::from_le_bytes([p[0], p[1]]).to_f32()
    }
}

#[inline(always)]
unsafe fn float_tile<E: Elem, L: Lanes, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let n = w.len() / E::BYTES;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [[L::zero(); 2]; NT];
    let step = 2 * L::N;
    let mut i = 0;
    while i + step <= n {
        let w0 = E::load::<L>(wp.add(i * E::BYTES));
        let w1 = E::load::<L>(wp.add((i + L::N) * E::BYTES));
        for (t, acc) in acc.iter_mut().enumerate() {
            let xt = xp.add(t * x_stride + 4 * i);
            acc[0] = L::fmadd(w0, L::f32s(xt), acc[0]);
            acc[1] = L::fmadd(w1, L::f32s(xt.add(4 * L::N)), acc[1]);
        }
        i += step;
    }
    let mut out = [0f32; MAX_NT];
    for (t, acc) in acc.iter().enumerate() {
        let mut s = L::hsum(L::add(acc[0], acc[1]));
        // Rows whose length is not a multiple of the step (rare: odd hidden sizes).
        for j in i..n {
            let xj = f32::from_le_bytes(x[t * x_stride + 4 * j..][..4].try_into().unwrap());
            s += E::scalar(&w[j * E::BYTES..]) * xj;
        }
        out[t] = s;
    }
    out
}

tile_entries!("avx2,fma,f16c";
    f32_avx2 => float_tile::<F32, Ymm>;
    f16_avx2 => float_tile::<F16, Ymm>;
    bf16_avx2 => float_tile::<BF16, Ymm>;
);

tile_entries!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni";
    f32_avx512 => float_tile::<F32, Zmm>;
    f16_avx512 => float_tile::<F16, Zmm>;
    bf16_avx512 => float_tile::<BF16, Zmm>;
);

pub(super) fn kernel_avx2(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::F32 => f32_avx2,
        GgmlType::F16 => f16_avx2,
        GgmlType::BF16 => bf16_avx2,
        _ => return None,
    })
}

pub(super) fn kernel_avx512(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::F32 => f32_avx512,
        GgmlType::F16 => f16_avx512,
        GgmlType::BF16 => bf16_avx512,
        _ => return None,
    })
}
