//! 256-element super-block types (Q2_K..Q6_K, IQ4_XS) against Q8_K activations.
//!
//! Every type unpacks a super-block into eight groups of 32 byte quants plus 16-bit scales per
//! 16 elements; one shared loop then dots them with each token row (`vpmaddubsw` to 16-bit pair
//! sums, `vpmaddwd` with the scales to 32 bits). Minimums and constant offsets (Q6_K's −32,
//! Q3_K's −4) come out of the loop: Σ coef·Σa over 16-element sub-blocks, with Q8_K's
//! precomputed block sums.

use std::arch::x86_64::*;

use super::{f16_at, f32_at, hsum_ps, iq4_table, nibbles32, tile_entries};
use crate::cpu::vec_dot::{TileFn, MAX_NT};
use quant::ggml::blocks::{q3k_scales, scale_min_k4, BlockQ8K};
use quant::ggml::GgmlType;

/// One super-block ready for the dot loop.
struct Unpacked {
    /// Quants of group g (elements 32g..32g+32) as unsigned bytes (|w| for signed types).
    q: [__m256i; 8],
    /// Signed types only: the signed quants, whose signs are moved onto the activations.
    w: [__m256i; 8],
    /// Scales for `vpmaddwd` on group g's pair sums: lanes 0-7 the scale of its first 16
    /// elements, lanes 8-15 of its last 16.
    sc: [__m256i; 8],
    d: f32,
    /// Per 16-element sub-block, the coefficient of Σa to subtract, times `dcoef`.
    coef: __m256i,
    dcoef: f32,
}

trait KQuant {
    const BYTES: usize;
    const SIGNED: bool;
    /// Whether `coef` is used.
    const OFFSET: bool;
    unsafe fn unpack(p: *const u8, u: &mut Unpacked);
}

/// Scales for group g from 16 per-sub-block i16 scales: sub-block 2g in the low 128-bit lane,
/// 2g+1 in the high one (`vpshufb` works within lanes, so each lane starts as a copy of the
/// half of the scales that holds both).
#[inline(always)]
unsafe fn scales_per_16(s16: __m256i, sc: &mut [__m256i; 8]) {
    let halves = [
        _mm256_permute2x128_si256(s16, s16, 0x00),
        _mm256_permute2x128_si256(s16, s16, 0x11),
    ];
    for (g, out) in sc.iter_mut().enumerate() {
        let k = (g % 4) as i16;
        let lo = ((4 * k + 1) << 8) | (4 * k);
        let hi = ((4 * k + 3) << 8) | (4 * k + 2);
        let mask = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
        *out = _mm256_shuffle_epi8(halves[g / 4], mask);
    }
}

/// Bit `g` of each byte of `v`, moved to bit `to`.
#[inline(always)]
unsafe fn bit_to(v: __m256i, g: usize, to: i32) -> __m256i {
    // Variable shifts: 16-bit lanes are fine because the mask keeps each byte's own bit.
    let b = _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(g as i32)),
        _mm256_set1_epi8(1),
    );
    _mm256_sll_epi16(b, _mm_cvtsi32_si128(to))
}

/// The 2-bit field at bit `2k` of each byte.
#[inline(always)]
unsafe fn crumbs(v: __m256i, k: usize) -> __m256i {
    _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * k as i32)),
        _mm256_set1_epi8(3),
    )
}

#[inline(always)]
unsafe fn low_nibbles(v: __m256i) -> __m256i {
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

#[inline(always)]
unsafe fn high_nibbles(v: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F))
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Q4_K/Q5_K's eight 6-bit (scale, min) pairs: the scales per group, the minimums per 16.
#[inline(always)]
unsafe fn k4_scales(p: *const u8, u: &mut Unpacked) {
    let packed: [u8; 12] = (p as *const [u8; 12]).read_unaligned();
    let mut mins = [0i16; 16];
    for g in 0..8 {
        let (sc, m) = scale_min_k4(g, &packed);
        u.sc[g] = _mm256_set1_epi16(sc as i16);
        mins[2 * g] = m as i16;
        mins[2 * g + 1] = m as i16;
    }
    u.coef = _mm256_loadu_si256(mins.as_ptr() as *const __m256i);
}

struct Q2K;
impl KQuant for Q2K {
    const BYTES: usize = 84;
    const SIGNED: bool = false;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        let packed = _mm_loadu_si128(p as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        let scales = _mm_and_si128(packed, m4);
        let mins = _mm_and_si128(_mm_srli_epi16(packed, 4), m4);
        scales_per_16(_mm256_cvtepu8_epi16(scales), &mut u.sc);
        u.coef = _mm256_cvtepu8_epi16(mins);
        for c in 0..2 {
            let bits = load(p.add(16 + 32 * c));
            for k in 0..4 {
                u.q[4 * c + k] = crumbs(bits, k);
            }
        }
        u.d = f16_at(p.add(80));
        u.dcoef = f16_at(p.add(82));
    }
}

struct Q3K;
impl KQuant for Q3K {
    const BYTES: usize = 110;
    const SIGNED: bool = false;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        let sc8 = q3k_scales(&(p.add(96) as *const [u8; 12]).read_unaligned());
        let s16 = _mm256_sub_epi16(
            _mm256_cvtepi8_epi16(_mm_loadu_si128(sc8.as_ptr() as *const __m128i)),
            _mm256_set1_epi16(32),
        );
        scales_per_16(s16, &mut u.sc);
        // q − 4·(1 − h) = (q | h << 2) − 4: unsigned quants with an offset of 4.
        u.coef = _mm256_slli_epi16(s16, 2);
        let hmask = load(p);
        for c in 0..2 {
            let bits = load(p.add(32 + 32 * c));
            for k in 0..4 {
                let g = 4 * c + k;
                u.q[g] = _mm256_or_si256(crumbs(bits, k), bit_to(hmask, g, 2));
            }
        }
        u.d = f16_at(p.add(108));
        u.dcoef = u.d;
    }
}

struct Q4K;
impl KQuant for Q4K {
    const BYTES: usize = 144;
    const SIGNED: bool = false;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        k4_scales(p.add(4), u);
        for c in 0..4 {
            let bits = load(p.add(16 + 32 * c));
            u.q[2 * c] = low_nibbles(bits);
            u.q[2 * c + 1] = high_nibbles(bits);
        }
        u.d = f16_at(p);
        u.dcoef = f16_at(p.add(2));
    }
}

struct Q5K;
impl KQuant for Q5K {
    const BYTES: usize = 176;
    const SIGNED: bool = false;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        k4_scales(p.add(4), u);
        let qh = load(p.add(16));
        for c in 0..4 {
            let bits = load(p.add(48 + 32 * c));
            let (g0, g1) = (2 * c, 2 * c + 1);
            u.q[g0] = _mm256_or_si256(low_nibbles(bits), bit_to(qh, g0, 4));
            u.q[g1] = _mm256_or_si256(high_nibbles(bits), bit_to(qh, g1, 4));
        }
        u.d = f16_at(p);
        u.dcoef = f16_at(p.add(2));
    }
}

struct Q6K;
impl KQuant for Q6K {
    const BYTES: usize = 210;
    const SIGNED: bool = false;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        let s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
        scales_per_16(s16, &mut u.sc);
        // Quants are stored +32.
        u.coef = _mm256_slli_epi16(s16, 5);
        for n in 0..2 {
            let (l0, l1) = (load(p.add(64 * n)), load(p.add(64 * n + 32)));
            let h = load(p.add(128 + 32 * n));
            let lows = [
                low_nibbles(l0),
                low_nibbles(l1),
                high_nibbles(l0),
                high_nibbles(l1),
            ];
            for (k, lo) in lows.into_iter().enumerate() {
                let high = _mm256_slli_epi16(crumbs(h, k), 4);
                u.q[4 * n + k] = _mm256_or_si256(lo, high);
            }
        }
        u.d = f16_at(p.add(208));
        u.dcoef = u.d;
    }
}

struct IQ4XS;
impl KQuant for IQ4XS {
    const BYTES: usize = 136;
    const SIGNED: bool = true;
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        let scales_h = (p.add(2) as *const u16).read_unaligned();
        let table = iq4_table();
        for g in 0..8 {
            let lo = (*p.add(4 + g / 2) >> (4 * (g % 2))) & 0xF;
            let hi = (scales_h >> (2 * g)) & 3;
            let ls = (lo as i16 | ((hi as i16) << 4)) - 32;
            u.sc[g] = _mm256_set1_epi16(ls);
            let w = _mm256_shuffle_epi8(table, nibbles32(p.add(8 + 16 * g)));
            u.w[g] = w;
            u.q[g] = _mm256_sign_epi8(w, w);
        }
        u.d = f16_at(p);
    }
}

const ACT_BYTES: usize = size_of::<BlockQ8K>();
const ACT_QS: usize = std::mem::offset_of!(BlockQ8K, qs);
const ACT_BSUMS: usize = std::mem::offset_of!(BlockQ8K, bsums);

/// How one token row's products with the eight unpacked groups are summed (to 8 i32 lanes).
trait GroupSums {
    /// The unpacked super-block rearranged for this width, once per super-block.
    type Prepared;
    unsafe fn prepare<K: KQuant>(u: &Unpacked) -> Self::Prepared;
    unsafe fn sums<K: KQuant>(u: &Unpacked, p: &Self::Prepared, qs: *const u8) -> __m256i;
}

/// One group per 256-bit step.
struct Ymm;
impl GroupSums for Ymm {
    type Prepared = ();
    #[inline(always)]
    unsafe fn prepare<K: KQuant>(_: &Unpacked) {}
    #[inline(always)]
    unsafe fn sums<K: KQuant>(u: &Unpacked, _: &(), qs: *const u8) -> __m256i {
        let mut sum = _mm256_setzero_si256();
        for g in 0..8 {
            let av = load(qs.add(32 * g));
            let s = if K::SIGNED {
                _mm256_sign_epi8(av, u.w[g])
            } else {
                av
            };
            let pairs = _mm256_maddubs_epi16(u.q[g], s);
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(u.sc[g], pairs));
        }
        sum
    }
}

/// Two groups per 512-bit step (AVX-512BW): half the instructions per token row.
struct Zmm;
struct GroupPairs {
    q: [__m512i; 4],
    sc: [__m512i; 4],
    /// Signed types: where the quants are negative.
    negative: [__mmask64; 4],
}
impl GroupSums for Zmm {
    type Prepared = GroupPairs;
    #[inline(always)]
    unsafe fn prepare<K: KQuant>(u: &Unpacked) -> GroupPairs {
        let join = |a: __m256i, b: __m256i| _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        let mut p = GroupPairs {
            q: [_mm512_setzero_si512(); 4],
            sc: [_mm512_setzero_si512(); 4],
            negative: [0; 4],
        };
        for k in 0..4 {
            p.q[k] = join(u.q[2 * k], u.q[2 * k + 1]);
            p.sc[k] = join(u.sc[2 * k], u.sc[2 * k + 1]);
            if K::SIGNED {
                p.negative[k] = _mm512_movepi8_mask(join(u.w[2 * k], u.w[2 * k + 1]));
            }
        }
        p
    }
    #[inline(always)]
    unsafe fn sums<K: KQuant>(_: &Unpacked, p: &GroupPairs, qs: *const u8) -> __m256i {
        let mut sum = _mm512_setzero_si512();
        for k in 0..4 {
            let av = _mm512_loadu_si512(qs.add(64 * k) as *const _);
            let s = if K::SIGNED {
                _mm512_mask_sub_epi8(av, p.negative[k], _mm512_setzero_si512(), av)
            } else {
                av
            };
            let pairs = _mm512_maddubs_epi16(p.q[k], s);
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(p.sc[k], pairs));
        }
        _mm256_add_epi32(
            _mm512_castsi512_si256(sum),
            _mm512_extracti64x4_epi64(sum, 1),
        )
    }
}

#[inline(always)]
unsafe fn kquant_tile<K: KQuant, W: GroupSums, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let zero = _mm256_setzero_si256();
    let mut u = Unpacked {
        q: [zero; 8],
        w: [zero; 8],
        sc: [zero; 8],
        d: 0.0,
        coef: zero,
        dcoef: 0.0,
    };
    let mut acc = [_mm256_setzero_ps(); NT];
    for i in 0..w.len() / K::BYTES {
        K::unpack(wp.add(i * K::BYTES), &mut u);
        let prepared = W::prepare::<K>(&u);
        for (t, acc) in acc.iter_mut().enumerate() {
            let a = xp.add(t * x_stride + i * ACT_BYTES);
            let da = f32_at(a);
            let sum = W::sums::<K>(&u, &prepared, a.add(ACT_QS));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(da * u.d), _mm256_cvtepi32_ps(sum), *acc);
            if K::OFFSET {
                let off = _mm256_madd_epi16(u.coef, load(a.add(ACT_BSUMS)));
                *acc =
                    _mm256_fnmadd_ps(_mm256_set1_ps(da * u.dcoef), _mm256_cvtepi32_ps(off), *acc);
            }
        }
    }
    let mut out = [0f32; MAX_NT];
    for (t, o) in out.iter_mut().take(NT).enumerate() {
        *o = hsum_ps(acc[t]);
    }
    out
}

tile_entries!("avx2,fma,f16c";
    q2_k_avx2 => kquant_tile::<Q2K, Ymm>;
    q3_k_avx2 => kquant_tile::<Q3K, Ymm>;
    q4_k_avx2 => kquant_tile::<Q4K, Ymm>;
    q5_k_avx2 => kquant_tile::<Q5K, Ymm>;
    q6_k_avx2 => kquant_tile::<Q6K, Ymm>;
    iq4_xs_avx2 => kquant_tile::<IQ4XS, Ymm>;
);

tile_entries!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni";
    q2_k_avx512 => kquant_tile::<Q2K, Zmm>;
    q3_k_avx512 => kquant_tile::<Q3K, Zmm>;
    q4_k_avx512 => kquant_tile::<Q4K, Zmm>;
    q5_k_avx512 => kquant_tile::<Q5K, Zmm>;
    q6_k_avx512 => kquant_tile::<Q6K, Zmm>;
    iq4_xs_avx512 => kquant_tile::<IQ4XS, Zmm>;
);

pub(super) fn kernel_avx512(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q2K => q2_k_avx512,
        GgmlType::Q3K => q3_k_avx512,
        GgmlType::Q4K => q4_k_avx512,
        GgmlType::Q5K => q5_k_avx512,
        GgmlType::Q6K => q6_k_avx512,
        GgmlType::IQ4XS => iq4_xs_avx512,
        _ => return None,
    })
}

pub(super) fn kernel_avx2(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q2K => q2_k_avx2,
        GgmlType::Q3K => q3_k_avx2,
        GgmlType::Q4K => q4_k_avx2,
        GgmlType::Q5K => q5_k_avx2,
        GgmlType::Q6K => q6_k_avx2,
        GgmlType::IQ4XS => iq4_xs_avx2,
        _ => return None,
    })
}
