//! AVX-512 VNNI kernels over the interleaved layout (`cpu::interleave`): sixteen weight rows
//! against up to [`GROUP_NT`] token rows. Per block, the group's quants unpack once into eight
//! vectors of unsigned bytes; each token then takes eight `vpdpbusd` with four of its activation
//! bytes broadcast, which leave the sixteen rows' integer sums in the sixteen lanes, and one
//! multiply-add by the rows' scales times the token's. No horizontal sums, no per-row scale
//! conversions.

use std::arch::x86_64::*;

use crate::cpu::interleave::{iq4_codebook_unsigned, ROWS};
use crate::cpu::vec_dot::{ActRows, GroupFn, GroupOut, GROUP_NT};
use quant::ggml::GgmlType;

/// A 32-element block type in the interleaved layout (see `Layout`).
trait Packed {
    const NIBBLES: bool;
    const HIGH_BIT: bool;
    const MIN: bool;
    const CODEBOOK: bool;
    const OFFSET: i32;
    const QUANT_BYTES: usize =
        (if Self::NIBBLES { 256 } else { 512 }) + if Self::HIGH_BIT { 64 } else { 0 };
}

macro_rules! packed {
    ($name:ident, $nib:expr, $high:expr, $min:expr, $cb:expr, $off:expr) => {
        struct $name;
        impl Packed for $name {
            const NIBBLES: bool = $nib;
            const HIGH_BIT: bool = $high;
            const MIN: bool = $min;
            const CODEBOOK: bool = $cb;
            const OFFSET: i32 = $off;
        }
    };
}
packed!(Q4_0, true, false, false, false, 8);
packed!(Q4_1, true, false, true, false, 0);
packed!(Q5_0, true, true, false, false, 16);
packed!(Q5_1, true, true, true, false, 0);
packed!(Q8_0, false, false, false, false, 128);
packed!(IQ4NL, true, false, false, true, 128);

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
    if P::HIGH_BIT {
        let sixteen = _mm512_set1_epi8(16);
        for (j, u) in u.iter_mut().enumerate() {
            let k: __mmask64 = (q.add(256 + 8 * j) as *const u64).read_unaligned();
            *u = _mm512_mask_add_epi8(*u, k, *u, sixteen);
        }
    }
    u
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
    let scales = wp.add(nb * P::QUANT_BYTES);
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
            // (the hardware prefetchers alone left Q5_0 decode 25-40% slower). Prefetches past
            // the buffer are harmless; the address is never dereferenced.
            let ahead = wp.wrapping_add(b * P::QUANT_BYTES + PREFETCH);
            for l in 0..P::QUANT_BYTES / 64 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l) as *const i8);
            }
        }
        let u = unpack::<P>(wp.add(b * P::QUANT_BYTES), codebook);
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

macro_rules! group_entries {
    ($($name:ident => $p:ty;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $name(w: &[u8], nb: usize, x: ActRows, out: GroupOut) {
            // Each arm calls the body directly so it inlines into this function's features.
            match x.nt {
                1 => group_tile::<$p, 1>(w, nb, x, out),
                2 => group_tile::<$p, 2>(w, nb, x, out),
                3 => group_tile::<$p, 3>(w, nb, x, out),
                4 => group_tile::<$p, 4>(w, nb, x, out),
                5 => group_tile::<$p, 5>(w, nb, x, out),
                6 => group_tile::<$p, 6>(w, nb, x, out),
                7 => group_tile::<$p, 7>(w, nb, x, out),
                _ => group_tile::<$p, GROUP_NT>(w, nb, x, out),
            }
        }
    )*};
}

group_entries!(
    q4_0 => Q4_0;
    q4_1 => Q4_1;
    q5_0 => Q5_0;
    q5_1 => Q5_1;
    q8_0 => Q8_0;
    iq4_nl => IQ4NL;
);

pub(in crate::cpu::vec_dot) fn kernel(ty: GgmlType) -> Option<GroupFn> {
    Some(match ty {
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::IQ4NL => iq4_nl,
        _ => return None,
    })
}
