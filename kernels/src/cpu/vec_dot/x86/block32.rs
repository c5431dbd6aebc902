//! Types with 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) against Q8_0/Q8_1
//! activations. Each weight block is unpacked once to 32 bytes and reused for every token row.
//!
//! Signed weights use the sign trick (|w| as unsigned bytes times sign(w)·a), so one unsigned ×
//! signed byte product serves all types: pair sums stay within i16 (2·128·127 < 2^15), so AVX2's
//! saturating `vpmaddubsw` is exact and gives the same integers as VNNI's `vpdpbusd`.

use std::arch::x86_64::*;

use super::{bits32, f16_at, f32_at, hsum_ps, iq4_table, nibbles32, tile_entries};
use crate::cpu::vec_dot::{TileFn, MAX_NT};
use quant::ggml::GgmlType;

/// Sums of four adjacent unsigned × signed byte products, per i32 lane.
trait ByteDot {
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
}

struct MaddUbs;
impl ByteDot for MaddUbs {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

struct Vnni;
impl ByteDot for Vnni {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
}

/// A 32-element weight block type.
trait Block32 {
    /// Bytes per block.
    const BYTES: usize;
    /// Signed quants (paired with Q8_0); otherwise unsigned with a minimum (paired with Q8_1).
    const SIGNED: bool;
    /// The block's 32 quants, its scale and (unsigned types) its minimum.
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32);
}

struct Q4_0;
impl Block32 for Q4_0 {
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        let q = _mm256_sub_epi8(nibbles32(p.add(2)), _mm256_set1_epi8(8));
        (q, f16_at(p), 0.0)
    }
}

struct Q4_1;
impl Block32 for Q4_1 {
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        (nibbles32(p.add(4)), f16_at(p), f16_at(p.add(2)))
    }
}

struct Q5_0;
impl Block32 for Q5_0 {
    const BYTES: usize = 22;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        // q − 16 is the nibble where the fifth bit is set, else the nibble with its high four
        // bits set (nibble − 16 in two's complement).
        let high = _mm256_andnot_si256(bits32(p.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
        (_mm256_or_si256(nibbles32(p.add(6)), high), f16_at(p), 0.0)
    }
}

struct Q5_1;
impl Block32 for Q5_1 {
    const BYTES: usize = 24;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        let high = _mm256_and_si256(bits32(p.add(4)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles32(p.add(8)), high);
        (q, f16_at(p), f16_at(p.add(2)))
    }
}

struct Q8_0;
impl Block32 for Q8_0 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        (
            _mm256_loadu_si256(p.add(2) as *const __m256i),
            f16_at(p),
            0.0,
        )
    }
}

struct IQ4NL;
impl Block32 for IQ4NL {
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        let q = _mm256_shuffle_epi8(iq4_table(), nibbles32(p.add(2)));
        (q, f16_at(p), 0.0)
    }
}

/// (block bytes, offset of qs): Q8_0 blocks are {d: f16, qs: [i8; 32]}; Q8_1 blocks
/// {d: f16, s: f16, qs: [i8; 32]}.
const fn act_layout(signed: bool) -> (usize, usize) {
    if signed {
        (34, 2)
    } else {
        (36, 4)
    }
}

#[inline(always)]
unsafe fn block32_tile<B: Block32, D: ByteDot, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let (act_bytes, qs_at) = act_layout(B::SIGNED);
    let nb = w.len() / B::BYTES;
    // The f32 copies of the activation blocks' d, then (Q8_1) of their s.
    let scales_at = (nb * act_bytes).next_multiple_of(4);
    let sums_at = scales_at + 4 * nb;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); NT];
    let mut mins = [0f32; NT];
    for i in 0..nb {
        let (q, d, m) = B::unpack(wp.add(i * B::BYTES));
        let u = if B::SIGNED { _mm256_sign_epi8(q, q) } else { q };
        for t in 0..NT {
            let row = xp.add(t * x_stride);
            let av = _mm256_loadu_si256(row.add(i * act_bytes + qs_at) as *const __m256i);
            let s = if B::SIGNED {
                _mm256_sign_epi8(av, q)
            } else {
                av
            };
            let sum = _mm256_cvtepi32_ps(D::dot(u, s));
            let da = f32_at(row.add(scales_at + 4 * i));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), sum, acc[t]);
            if !B::SIGNED {
                mins[t] += m * f32_at(row.add(sums_at + 4 * i));
            }
        }
    }
    let mut out = [0f32; MAX_NT];
    for (t, o) in out.iter_mut().take(NT).enumerate() {
        *o = hsum_ps(acc[t]) + mins[t];
    }
    out
}

tile_entries!("avx2,fma,f16c";
    q4_0_avx2 => block32_tile::<Q4_0, MaddUbs>;
    q4_1_avx2 => block32_tile::<Q4_1, MaddUbs>;
    q5_0_avx2 => block32_tile::<Q5_0, MaddUbs>;
    q5_1_avx2 => block32_tile::<Q5_1, MaddUbs>;
    q8_0_avx2 => block32_tile::<Q8_0, MaddUbs>;
    iq4_nl_avx2 => block32_tile::<IQ4NL, MaddUbs>;
);

tile_entries!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni";
    q4_0_vnni => block32_tile::<Q4_0, Vnni>;
    q4_1_vnni => block32_tile::<Q4_1, Vnni>;
    q5_0_vnni => block32_tile::<Q5_0, Vnni>;
    q5_1_vnni => block32_tile::<Q5_1, Vnni>;
    q8_0_vnni => block32_tile::<Q8_0, Vnni>;
    iq4_nl_vnni => block32_tile::<IQ4NL, Vnni>;
);

pub(super) fn kernel_avx2(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q4_0 => q4_0_avx2,
        GgmlType::Q4_1 => q4_1_avx2,
        GgmlType::Q5_0 => q5_0_avx2,
        GgmlType::Q5_1 => q5_1_avx2,
        GgmlType::Q8_0 => q8_0_avx2,
        GgmlType::IQ4NL => iq4_nl_avx2,
        _ => return None,
    })
}

pub(super) fn kernel_avx512(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q4_0 => q4_0_vnni,
        GgmlType::Q4_1 => q4_1_vnni,
        GgmlType::Q5_0 => q5_0_vnni,
        GgmlType::Q5_1 => q5_1_vnni,
        GgmlType::Q8_0 => q8_0_vnni,
        GgmlType::IQ4NL => iq4_nl_vnni,
        _ => return None,
    })
}
