//! Types with 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) against Q8_0/Q8_1
//! activations. Each weight block is unpacked once to 32 bytes and reused for every token row.
//!
//! Signed weights use the sign trick (|w| as unsigned bytes times sign(w)·a), so one unsigned ×
//! signed byte product serves all types: pair sums stay within i16 (2·128·127 < 2^15), so AVX2's
//! saturating `vpmaddubsw` is exact and gives the same integers as VNNI's `vpdpbusd`.
//!
//! The activation rows' f32 copies of the block scales (see `q8`) replace an f16 conversion per
//! block and token.

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

/// Where a token row's parts are, for a weight row of `nb` blocks.
#[derive(Clone, Copy)]
struct ActRow {
    block_bytes: usize,
    qs_at: usize,
    /// The f32 copies of the blocks' d, then (Q8_1) of their s.
    scales_at: usize,
    sums_at: usize,
}

impl ActRow {
    #[inline(always)]
    fn new(signed: bool, nb: usize) -> ActRow {
        let (block_bytes, qs_at) = act_layout(signed);
        let scales_at = (nb * block_bytes).next_multiple_of(4);
        ActRow {
            block_bytes,
            qs_at,
            scales_at,
            sums_at: scales_at + 4 * nb,
        }
    }
}

/// Block `i` of the weight row against each token row, into 256-bit accumulators.
#[inline(always)]
unsafe fn block_256<B: Block32, D: ByteDot, const NT: usize>(
    w: *const u8,
    x: *const u8,
    x_stride: usize,
    i: usize,
    at: ActRow,
    acc: &mut [__m256; NT],
    mins: &mut [f32; NT],
) {
    let (q, d, m) = B::unpack(w.add(i * B::BYTES));
    let u = if B::SIGNED { _mm256_sign_epi8(q, q) } else { q };
    for t in 0..NT {
        let row = x.add(t * x_stride);
        let av = _mm256_loadu_si256(row.add(i * at.block_bytes + at.qs_at) as *const __m256i);
        let s = if B::SIGNED {
            _mm256_sign_epi8(av, q)
        } else {
            av
        };
        let sum = _mm256_cvtepi32_ps(D::dot(u, s));
        let da = f32_at(row.add(at.scales_at + 4 * i));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), sum, acc[t]);
        if !B::SIGNED {
            mins[t] += m * f32_at(row.add(at.sums_at + 4 * i));
        }
    }
}

#[inline(always)]
unsafe fn block32_tile<B: Block32, D: ByteDot, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let nb = w.len() / B::BYTES;
    let at = ActRow::new(B::SIGNED, nb);
    let mut acc = [_mm256_setzero_ps(); NT];
    let mut mins = [0f32; NT];
    for i in 0..nb {
        block_256::<B, D, NT>(w.as_ptr(), x.as_ptr(), x_stride, i, at, &mut acc, &mut mins);
    }
    let mut out = [0f32; MAX_NT];
    for (t, o) in out.iter_mut().take(NT).enumerate() {
        *o = hsum_ps(acc[t]) + mins[t];
    }
    out
}

/// AVX-512: two blocks per 512-bit vector, one `vpdpbusd` for both, and their two scales applied
/// by one multiply; an odd last block goes through the 256-bit step.
#[inline(always)]
unsafe fn block32_tile_512<B: Block32, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let nb = w.len() / B::BYTES;
    let at = ActRow::new(B::SIGNED, nb);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    // Lanes 0-7 take the first block's scale, lanes 8-15 the second's.
    let pair_lanes = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); NT];
    let mut mins = [0f32; NT];
    for i in (0..nb - nb % 2).step_by(2) {
        let (q0, d0, m0) = B::unpack(wp.add(i * B::BYTES));
        let (q1, d1, m1) = B::unpack(wp.add((i + 1) * B::BYTES));
        let q = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
        let negative = _mm512_movepi8_mask(q);
        let u = if B::SIGNED { _mm512_abs_epi8(q) } else { q };
        let dw = _mm512_permutexvar_ps(
            pair_lanes,
            _mm512_castps128_ps512(_mm_setr_ps(d0, d1, 0.0, 0.0)),
        );
        for t in 0..NT {
            let row = xp.add(t * x_stride);
            let a = row.add(i * at.block_bytes + at.qs_at);
            let lo = _mm256_loadu_si256(a as *const __m256i);
            let hi = _mm256_loadu_si256(a.add(at.block_bytes) as *const __m256i);
            let av = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            // The weights' signs moved onto the activations (AVX-512 has no vpsignb).
            let s = if B::SIGNED {
                _mm512_mask_sub_epi8(av, negative, zero, av)
            } else {
                av
            };
            let sum = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, u, s));
            let da2 = (row.add(at.scales_at + 4 * i) as *const f64).read_unaligned();
            let da = _mm512_permutexvar_ps(
                pair_lanes,
                _mm512_castps128_ps512(_mm_castpd_ps(_mm_set_sd(da2))),
            );
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), sum, acc[t]);
            if !B::SIGNED {
                let s0 = f32_at(row.add(at.sums_at + 4 * i));
                let s1 = f32_at(row.add(at.sums_at + 4 * i + 4));
                mins[t] += m0 * s0 + m1 * s1;
            }
        }
    }
    let mut tail = [_mm256_setzero_ps(); NT];
    if nb % 2 == 1 {
        block_256::<B, Vnni, NT>(wp, xp, x_stride, nb - 1, at, &mut tail, &mut mins);
    }
    let mut out = [0f32; MAX_NT];
    for (t, o) in out.iter_mut().take(NT).enumerate() {
        *o = _mm512_reduce_add_ps(acc[t]) + hsum_ps(tail[t]) + mins[t];
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
    q4_0_avx512 => block32_tile_512::<Q4_0>;
    q4_1_avx512 => block32_tile_512::<Q4_1>;
    q5_0_avx512 => block32_tile_512::<Q5_0>;
    q5_1_avx512 => block32_tile_512::<Q5_1>;
    q8_0_avx512 => block32_tile_512::<Q8_0>;
    iq4_nl_avx512 => block32_tile_512::<IQ4NL>;
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
        GgmlType::Q4_0 => q4_0_avx512,
        GgmlType::Q4_1 => q4_1_avx512,
        GgmlType::Q5_0 => q5_0_avx512,
        GgmlType::Q5_1 => q5_1_avx512,
        GgmlType::Q8_0 => q8_0_avx512,
        GgmlType::IQ4NL => iq4_nl_avx512,
        _ => return None,
    })
}
