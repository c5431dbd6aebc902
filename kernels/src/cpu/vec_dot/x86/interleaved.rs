//! AVX-512 VNNI kernels over the interleaved layout (`cpu::interleave`): sixteen weight rows
//! against up to [`GROUP_NT`] token rows. Per 32-element chunk, the group's quants unpack once
//! into eight vectors of unsigned bytes; each token then takes eight `vpdpbusd` with four of its
//! activation bytes broadcast, which leave the sixteen rows' integer sums in the sixteen lanes,
//! and one multiply-add by the rows' scales times the token's (K-quants: one integer multiply by
//! the rows' sub-block scales per chunk, one multiply-add per super-block). No horizontal sums,
//! no per-row scale conversions.

use std::arch::x86_64::*;

use crate::cpu::interleave::{iq4_codebook_unsigned, ROWS};
use crate::cpu::vec_dot::{ActRows, GroupFn, GroupOut, GROUP_NT};
use quant::ggml::GgmlType;

/// A block type in the interleaved layout (see `Layout`).
trait Packed {
    const NIBBLES: bool;
    const HIGH_BITS: usize;
    const MIN: bool;
    const CODEBOOK: bool;
    const OFFSET: i32;
    /// Bytes of one 32-element chunk's quants.
    const CHUNK_BYTES: usize = (if Self::NIBBLES { 256 } else { 512 }) + 64 * Self::HIGH_BITS;
}

macro_rules! packed {
    ($name:ident, $nib:expr, $high:expr, $min:expr, $cb:expr, $off:expr) => {
        struct $name;
        impl Packed for $name {
            const NIBBLES: bool = $nib;
            const HIGH_BITS: usize = $high;
            const MIN: bool = $min;
            const CODEBOOK: bool = $cb;
            const OFFSET: i32 = $off;
        }
    };
}
packed!(Q4_0, true, 0, false, false, 8);
packed!(Q4_1, true, 0, true, false, 0);
packed!(Q5_0, true, 1, false, false, 16);
packed!(Q5_1, true, 1, true, false, 0);
packed!(Q8_0, false, 0, false, false, 128);
packed!(IQ4NL, true, 0, false, true, 128);
packed!(Q4K, true, 0, true, false, 0);
packed!(Q5K, true, 1, true, false, 0);
packed!(Q6K, true, 2, false, false, 32);

/// The eight vectors of unsigned quants of one block (vector j: elements 4j..4j+4 of each row).
#[inline(always)]
unsafe fn unpack<P: Packed>(q: *const u8, codebook: __m512i) -> [__m512i; 8] {
    let mut u = [_mm512_setzero_si512(); 8];
    if P::NIBBLES {
        let low = _mm512_set1_epi8(0x0F);
        for p in 0..4 {
            let v = _mm512_load_si512(q.add(64 * p) as *const _);
            u[p] = _mm512_and_si512(v, low);
            u[p + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        }
    } else {
        for (j, u) in u.iter_mut().enumerate() {
            *u = _mm512_load_si512(q.add(64 * j) as *const _);
        }
    }
    if P::CODEBOOK {
        for u in u.iter_mut() {
            *u = _mm512_shuffle_epi8(codebook, *u);
        }
    }
    for plane in 0..P::HIGH_BITS {
        let bit = _mm512_set1_epi8(16 << plane);
        for (j, u) in u.iter_mut().enumerate() {
            let k: __mmask64 = (q.add(256 + 64 * plane + 8 * j) as *const u64).read_unaligned();
            *u = _mm512_mask_add_epi8(*u, k, *u, bit);
        }
    }
    u
}

/// Asks for the `bytes` at `p` ahead of their use. Prefetches never fault, so `p` may point
/// past the buffer (it is never dereferenced).
#[inline(always)]
unsafe fn prefetch(p: *const u8, bytes: usize) {
    for l in 0..bytes / 64 {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l) as *const i8);
    }
}

/// How far ahead of the block being multiplied to prefetch, in bytes.
const PREFETCH: usize = 4096;

/// Where the parts of a token's activation row are, for rows of `nb` blocks: Q8_0 rows (types
/// with an offset) or Q8_1 rows (types with a minimum); see `cpu::q8`.
#[derive(Clone, Copy)]
struct Act {
    block: usize,
    qs: usize,
    d: usize,
    /// Q8_0: the i32 block sums; Q8_1: the f32 copies of s.
    extra: usize,
}

impl Act {
    #[inline(always)]
    fn new<P: Packed>(nb: usize) -> Act {
        let (block, qs) = if P::MIN { (36, 4) } else { (34, 2) };
        let d = (nb * block).next_multiple_of(4);
        Act {
            block,
            qs,
            d,
            extra: d + 4 * nb,
        }
    }
}

#[inline(always)]
unsafe fn group_tile<P: Packed, const NT: usize>(w: &[u8], nb: usize, x: ActRows, out: GroupOut) {
    let (wp, xp, x_stride) = (w.as_ptr(), x.x.as_ptr(), x.stride);
    let scales = wp.add(nb * P::CHUNK_BYTES);
    let at = Act::new::<P>(nb);
    let codebook = if P::CODEBOOK {
        let t = iq4_codebook_unsigned();
        _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i))
    } else {
        _mm512_setzero_si512()
    };
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        if NT <= 2 {
            // Decoding streams each weight once, from memory: ask for it a few blocks ahead
            // (the hardware prefetchers alone left Q5_0 decode 25-40% slower).
            prefetch(
                wp.wrapping_add(b * P::CHUNK_BYTES + PREFETCH),
                P::CHUNK_BYTES,
            );
        }
        let u = unpack::<P>(wp.add(b * P::CHUNK_BYTES), codebook);
        let dw = _mm512_cvtph_ps(_mm256_load_si256(scales.add(32 * b) as *const __m256i));
        let mw = if P::MIN {
            _mm512_cvtph_ps(_mm256_load_si256(
                scales.add(32 * (nb + b)) as *const __m256i
            ))
        } else {
            _mm512_setzero_ps()
        };
        for (t, acc) in acc.iter_mut().enumerate() {
            let row = xp.add(t * x_stride);
            let qs = row.add(b * at.block + at.qs);
            let mut sum = if P::OFFSET != 0 {
                let s = (row.add(at.extra + 4 * b) as *const i32).read_unaligned();
                _mm512_set1_epi32(-P::OFFSET * s)
            } else {
                _mm512_setzero_si512()
            };
            for (j, u) in u.iter().enumerate() {
                let a = (qs.add(4 * j) as *const i32).read_unaligned();
                sum = _mm512_dpbusd_epi32(sum, *u, _mm512_set1_epi32(a));
            }
            let dx = (row.add(at.d + 4 * b) as *const f32).read_unaligned();
            *acc = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(sum),
                _mm512_mul_ps(dw, _mm512_set1_ps(dx)),
                *acc,
            );
            if P::MIN {
                let s = (row.add(at.extra + 4 * b) as *const f32).read_unaligned();
                *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(s), *acc);
            }
        }
    }
    let mask: __mmask16 = if out.rows >= ROWS {
        !0
    } else {
        (1u16 << out.rows) - 1
    };
    for (t, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.y.add(t * out.stride), mask, *acc);
    }
}

/// Offsets inside a Q8_K activation block: d (f32), the quants, and the i16 sums of each 16.
const Q8K_BYTES: usize = 292;
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;

/// Q4_K, Q5_K and Q6_K against Q8_K activations, per super-block of eight chunks: per chunk and
/// token the integer sums (Q6_K: of each 16-element half, offset by −32·Σa through the
/// activations' sums) times the rows' sub-block scales, added up in integers; per super-block
/// and token one multiply-add by d·d_a and (Q4_K, Q5_K) one for the minimums, whose integer sum
/// Σ m·Σa takes one `vpdpwssd` per pair of sub-blocks.
#[inline(always)]
unsafe fn kquant_group_tile<P: Packed, const NT: usize>(
    w: &[u8],
    nb: usize,
    x: ActRows,
    out: GroupOut,
) {
    let (wp, xp, x_stride) = (w.as_ptr(), x.x.as_ptr(), x.stride);
    let scale_bytes = if P::MIN { 448 } else { 288 };
    let scales = wp.add(nb * 8 * P::CHUNK_BYTES);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let sb = scales.add(b * scale_bytes);
        let mut isum = [zero; NT];
        for c in 0..8 {
            let q = wp.add((8 * b + c) * P::CHUNK_BYTES);
            if NT <= 2 {
                prefetch(q.wrapping_add(PREFETCH), P::CHUNK_BYTES);
            }
            let u = unpack::<P>(q, zero);
            if P::MIN {
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(sb.add(16 * c) as *const __m128i));
                for (t, isum) in isum.iter_mut().enumerate() {
                    let qs = xp.add(t * x_stride + b * Q8K_BYTES + Q8K_QS + 32 * c);
                    let mut s = zero;
                    for (j, u) in u.iter().enumerate() {
                        let a = (qs.add(4 * j) as *const i32).read_unaligned();
                        s = _mm512_dpbusd_epi32(s, *u, _mm512_set1_epi32(a));
                    }
                    *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(s, sc));
                }
            } else {
                let load_sc = |s: usize| {
                    _mm512_cvtepi8_epi32(_mm_loadu_si128(sb.add(16 * s) as *const __m128i))
                };
                let (sc0, sc1) = (load_sc(2 * c), load_sc(2 * c + 1));
                for (t, isum) in isum.iter_mut().enumerate() {
                    let a = xp.add(t * x_stride + b * Q8K_BYTES);
                    let qs = a.add(Q8K_QS + 32 * c);
                    let bsum = |s: usize| (a.add(Q8K_BSUMS + 2 * s) as *const i16).read_unaligned();
                    let mut half = [
                        _mm512_set1_epi32(-P::OFFSET * bsum(2 * c) as i32),
                        _mm512_set1_epi32(-P::OFFSET * bsum(2 * c + 1) as i32),
                    ];
                    for (j, u) in u.iter().enumerate() {
                        let a = (qs.add(4 * j) as *const i32).read_unaligned();
                        half[j / 4] = _mm512_dpbusd_epi32(half[j / 4], *u, _mm512_set1_epi32(a));
                    }
                    let both = _mm512_add_epi32(
                        _mm512_mullo_epi32(half[0], sc0),
                        _mm512_mullo_epi32(half[1], sc1),
                    );
                    *isum = _mm512_add_epi32(*isum, both);
                }
            }
        }
        let (d_at, dmin_at) = if P::MIN { (384, 416) } else { (256, 0) };
        let dw = _mm512_cvtph_ps(_mm256_load_si256(sb.add(d_at) as *const __m256i));
        let dmin = if P::MIN {
            _mm512_cvtph_ps(_mm256_load_si256(sb.add(dmin_at) as *const __m256i))
        } else {
            _mm512_setzero_ps()
        };
        for (t, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
            let a = xp.add(t * x_stride + b * Q8K_BYTES);
            let da = _mm512_set1_ps((a as *const f32).read_unaligned());
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, da), *acc);
            if P::MIN {
                let mut m = zero;
                for p in 0..4 {
                    let bs = |s: usize| (a.add(Q8K_BSUMS + 2 * s) as *const i16).read_unaligned();
                    // Σa over sub-blocks 2p and 2p+1, as the i16 pair the minimums pair with.
                    let lo = bs(4 * p).wrapping_add(bs(4 * p + 1)) as u16 as u32;
                    let hi = bs(4 * p + 2).wrapping_add(bs(4 * p + 3)) as u16 as u32;
                    let mins = _mm512_load_si512(sb.add(128 + 64 * p) as *const _);
                    m = _mm512_dpwssd_epi32(m, mins, _mm512_set1_epi32((lo | hi << 16) as i32));
                }
                *acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmin, da), *acc);
            }
        }
    }
    let mask: __mmask16 = if out.rows >= ROWS {
        !0
    } else {
        (1u16 << out.rows) - 1
    };
    for (t, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.y.add(t * out.stride), mask, *acc);
    }
}

macro_rules! group_entries {
    ($($name:ident => $body:ident::<$p:ty>;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $name(w: &[u8], nb: usize, x: ActRows, out: GroupOut) {
            // Each arm calls the body directly so it inlines into this function's features.
            match x.nt {
                1 => $body::<$p, 1>(w, nb, x, out),
                2 => $body::<$p, 2>(w, nb, x, out),
                3 => $body::<$p, 3>(w, nb, x, out),
                4 => $body::<$p, 4>(w, nb, x, out),
                5 => $body::<$p, 5>(w, nb, x, out),
                6 => $body::<$p, 6>(w, nb, x, out),
                7 => $body::<$p, 7>(w, nb, x, out),
                _ => $body::<$p, GROUP_NT>(w, nb, x, out),
            }
        }
    )*};
}

group_entries!(
    q4_0 => group_tile::<Q4_0>;
    q4_1 => group_tile::<Q4_1>;
    q5_0 => group_tile::<Q5_0>;
    q5_1 => group_tile::<Q5_1>;
    q8_0 => group_tile::<Q8_0>;
    iq4_nl => group_tile::<IQ4NL>;
    q4_k => kquant_group_tile::<Q4K>;
    q5_k => kquant_group_tile::<Q5K>;
    q6_k => kquant_group_tile::<Q6K>;
);

pub(in crate::cpu::vec_dot) fn kernel(ty: GgmlType) -> Option<GroupFn> {
    Some(match ty {
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::IQ4NL => iq4_nl,
        GgmlType::Q4K => q4_k,
        GgmlType::Q5K => q5_k,
        GgmlType::Q6K => q6_k,
        _ => return None,
    })
}
