//! aarch64 NEON kernels (base NEON: `smull`/`sadalp` byte products, no dotprod requirement).
//!
//! NEON multiplies signed bytes by signed bytes, so every type unpacks straight to signed quants
//! (offsets such as Q6_K's −32 applied in the bytes); only additive minimums (Q4_1, Q5_1, Q2_K,
//! Q4_K, Q5_K) stay outside, through Q8_1's s or Q8_K's block sums. F16 weights use the scalar
//! kernel: Rust's NEON f16 vector types are not stable.
//!
//! No aarch64 host here: the kernel tests pass under qemu-aarch64 user emulation (correctness
//! only; never timed).

use std::arch::aarch64::*;

use super::{TileFn, MAX_NT};
use quant::ggml::blocks::{q3k_scales, scale_min_k4, BlockQ8K, IQ4_VALUES};
use quant::ggml::GgmlType;

/// Picks the monomorphized body for the number of activation rows.
macro_rules! tile_entries {
    ($($name:ident => $body:ident::<$($g:ty),*>;)*) => {$(
        #[target_feature(enable = "neon")]
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

/// Σ a·b over 16 signed bytes, in four i32 lanes.
#[inline(always)]
unsafe fn dot16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpaddlq_s16(lo), hi)
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    half::f16::from_bits((p as *const u16).read_unaligned()).to_f32()
}

#[inline(always)]
unsafe fn low_nibbles(b: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F)))
}

#[inline(always)]
unsafe fn high_nibbles(b: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(vshrq_n_u8(b, 4))
}

/// (bits >> shift) & mask per byte, for a shift known only at run time.
#[inline(always)]
unsafe fn field(bits: uint8x16_t, shift: usize, mask: u8) -> uint8x16_t {
    vandq_u8(vshlq_u8(bits, vdupq_n_s8(-(shift as i8))), vdupq_n_u8(mask))
}

/// 0x10 where bit j (j = 16·half + lane) of the little-endian u32 at `p` is set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8, half: usize) -> int8x16_t {
    let b = [*p.add(2 * half), *p.add(2 * half + 1)];
    let bytes = vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1]));
    let select: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let set = vtstq_u8(bytes, vld1q_u8(select.as_ptr()));
    vreinterpretq_s8_u8(vandq_u8(set, vdupq_n_u8(0x10)))
}

#[inline(always)]
unsafe fn iq4(idx: int8x16_t) -> int8x16_t {
    vqtbl1q_s8(vld1q_s8(IQ4_VALUES.as_ptr()), vreinterpretq_u8_s8(idx))
}

/// A 32-element weight block type.
trait Block32 {
    const BYTES: usize;
    /// Paired with Q8_0; otherwise the type has a minimum and pairs with Q8_1.
    const SIGNED: bool;
    /// The 32 quants as signed bytes, the scale, the minimum.
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32);
}

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [int8x16_t; 2] {
    let b = vld1q_u8(p);
    [low_nibbles(b), high_nibbles(b)]
}

struct Q4_0;
impl Block32 for Q4_0 {
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32) {
        let [lo, hi] = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        ([vsubq_s8(lo, eight), vsubq_s8(hi, eight)], f16_at(p), 0.0)
    }
}

struct Q4_1;
impl Block32 for Q4_1 {
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32) {
        (nibbles(p.add(4)), f16_at(p), f16_at(p.add(2)))
    }
}

struct Q5_0;
impl Block32 for Q5_0 {
    const BYTES: usize = 22;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32) {
        let [lo, hi] = nibbles(p.add(6));
        let sixteen = vdupq_n_s8(16);
        let q = [
            vsubq_s8(vorrq_s8(lo, fifth_bits(p.add(2), 0)), sixteen),
            vsubq_s8(vorrq_s8(hi, fifth_bits(p.add(2), 1)), sixteen),
        ];
        (q, f16_at(p), 0.0)
    }
}

struct Q5_1;
impl Block32 for Q5_1 {
    const BYTES: usize = 24;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32) {
        let [lo, hi] = nibbles(p.add(8));
        let q = [
            vorrq_s8(lo, fifth_bits(p.add(4), 0)),
            vorrq_s8(hi, fifth_bits(p.add(4), 1)),
        ];
        (q, f16_at(p), f16_at(p.add(2)))
    }
}

struct Q8_0;
impl Block32 for Q8_0 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32) {
        let q = p.add(2) as *const i8;
        ([vld1q_s8(q), vld1q_s8(q.add(16))], f16_at(p), 0.0)
    }
}

struct IQ4NL;
impl Block32 for IQ4NL {
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> ([int8x16_t; 2], f32, f32) {
        let [lo, hi] = nibbles(p.add(2));
        ([iq4(lo), iq4(hi)], f16_at(p), 0.0)
    }
}

#[inline(always)]
unsafe fn block32_tile<B: Block32, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    // Q8_0 blocks are {d: f16, qs}; Q8_1 blocks {d: f16, s: f16, qs}.
    let (act_bytes, qs_at) = if B::SIGNED { (34, 2) } else { (36, 4) };
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut out = [0f32; MAX_NT];
    for i in 0..w.len() / B::BYTES {
        let (q, d, m) = B::unpack(wp.add(i * B::BYTES));
        for (t, o) in out.iter_mut().enumerate().take(NT) {
            let a = xp.add(t * x_stride + i * act_bytes);
            let qa = a.add(qs_at) as *const i8;
            let s = vaddq_s32(dot16(q[0], vld1q_s8(qa)), dot16(q[1], vld1q_s8(qa.add(16))));
            *o += vaddvq_s32(s) as f32 * (d * f16_at(a));
            if !B::SIGNED {
                *o += m * f16_at(a.add(2));
            }
        }
    }
    out
}

/// One super-block as sixteen 16-element sub-blocks of signed quants with integer scales, and
/// (types with minimums) the minimum per sub-block.
struct Unpacked {
    q: [int8x16_t; 16],
    sc: [i32; 16],
    mins: [i32; 16],
    d: f32,
    dmin: f32,
}

trait KQuant {
    const BYTES: usize;
    const MINS: bool;
    unsafe fn unpack(p: *const u8, u: &mut Unpacked);
}

struct Q2K;
impl KQuant for Q2K {
    const BYTES: usize = 84;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        for s in 0..16 {
            let b = *p.add(s);
            u.sc[s] = (b & 0xF) as i32;
            u.mins[s] = (b >> 4) as i32;
        }
        for c in 0..2 {
            for half in 0..2 {
                let bits = vld1q_u8(p.add(16 + 32 * c + 16 * half));
                for k in 0..4 {
                    let g = 4 * c + k;
                    u.q[2 * g + half] = vreinterpretq_s8_u8(field(bits, 2 * k, 3));
                }
            }
        }
        u.d = f16_at(p.add(80));
        u.dmin = f16_at(p.add(82));
    }
}

struct Q3K;
impl KQuant for Q3K {
    const BYTES: usize = 110;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        let sc = q3k_scales(&(p.add(96) as *const [u8; 12]).read_unaligned());
        for (o, v) in u.sc.iter_mut().zip(sc) {
            *o = v as i32 - 32;
        }
        let hmask = [vld1q_u8(p), vld1q_u8(p.add(16))];
        for c in 0..2 {
            for (half, hm) in hmask.iter().enumerate() {
                let bits = vld1q_u8(p.add(32 + 32 * c + 16 * half));
                for k in 0..4 {
                    let g = 4 * c + k;
                    // q − 4·(1 − h) = (q | h << 2) − 4
                    let h = vshlq_n_u8(field(*hm, g, 1), 2);
                    let q = vreinterpretq_s8_u8(vorrq_u8(field(bits, 2 * k, 3), h));
                    u.q[2 * g + half] = vsubq_s8(q, vdupq_n_s8(4));
                }
            }
        }
        u.d = f16_at(p.add(108));
    }
}

/// Q4_K/Q5_K scales and minimums per 16-element sub-block.
#[inline(always)]
unsafe fn k4_scales(p: *const u8, u: &mut Unpacked) {
    let packed: [u8; 12] = (p as *const [u8; 12]).read_unaligned();
    for g in 0..8 {
        let (sc, m) = scale_min_k4(g, &packed);
        u.sc[2 * g] = sc as i32;
        u.sc[2 * g + 1] = sc as i32;
        u.mins[2 * g] = m as i32;
        u.mins[2 * g + 1] = m as i32;
    }
}

struct Q4K;
impl KQuant for Q4K {
    const BYTES: usize = 144;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        k4_scales(p.add(4), u);
        for c in 0..4 {
            for half in 0..2 {
                let bits = vld1q_u8(p.add(16 + 32 * c + 16 * half));
                u.q[4 * c + half] = low_nibbles(bits);
                u.q[4 * c + 2 + half] = high_nibbles(bits);
            }
        }
        u.d = f16_at(p);
        u.dmin = f16_at(p.add(2));
    }
}

struct Q5K;
impl KQuant for Q5K {
    const BYTES: usize = 176;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        k4_scales(p.add(4), u);
        let qh = [vld1q_u8(p.add(16)), vld1q_u8(p.add(32))];
        for c in 0..4 {
            for (half, qh) in qh.iter().enumerate() {
                let bits = vld1q_u8(p.add(48 + 32 * c + 16 * half));
                let h0 = vreinterpretq_s8_u8(vshlq_n_u8(field(*qh, 2 * c, 1), 4));
                let h1 = vreinterpretq_s8_u8(vshlq_n_u8(field(*qh, 2 * c + 1, 1), 4));
                u.q[4 * c + half] = vorrq_s8(low_nibbles(bits), h0);
                u.q[4 * c + 2 + half] = vorrq_s8(high_nibbles(bits), h1);
            }
        }
        u.d = f16_at(p);
        u.dmin = f16_at(p.add(2));
    }
}

struct Q6K;
impl KQuant for Q6K {
    const BYTES: usize = 210;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        for s in 0..16 {
            u.sc[s] = *(p.add(192 + s) as *const i8) as i32;
        }
        for n in 0..2 {
            for half in 0..2 {
                let l0 = vld1q_u8(p.add(64 * n + 16 * half));
                let l1 = vld1q_u8(p.add(64 * n + 32 + 16 * half));
                let h = vld1q_u8(p.add(128 + 32 * n + 16 * half));
                let lows = [
                    vandq_u8(l0, vdupq_n_u8(0xF)),
                    vandq_u8(l1, vdupq_n_u8(0xF)),
                    vshrq_n_u8(l0, 4),
                    vshrq_n_u8(l1, 4),
                ];
                for (k, lo) in lows.into_iter().enumerate() {
                    let q = vorrq_u8(lo, vshlq_n_u8(field(h, 2 * k, 3), 4));
                    let g = 4 * n + k;
                    u.q[2 * g + half] = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32));
                }
            }
        }
        u.d = f16_at(p.add(208));
    }
}

struct IQ4XS;
impl KQuant for IQ4XS {
    const BYTES: usize = 136;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        let scales_h = (p.add(2) as *const u16).read_unaligned();
        for g in 0..8 {
            let lo = (*p.add(4 + g / 2) >> (4 * (g % 2))) & 0xF;
            let hi = (scales_h >> (2 * g)) & 3;
            let ls = (lo as i32 | ((hi as i32) << 4)) - 32;
            u.sc[2 * g] = ls;
            u.sc[2 * g + 1] = ls;
            let b = vld1q_u8(p.add(8 + 16 * g));
            u.q[2 * g] = iq4(low_nibbles(b));
            u.q[2 * g + 1] = iq4(high_nibbles(b));
        }
        u.d = f16_at(p);
    }
}

const ACT_BYTES: usize = size_of::<BlockQ8K>();
const ACT_QS: usize = std::mem::offset_of!(BlockQ8K, qs);
const ACT_BSUMS: usize = std::mem::offset_of!(BlockQ8K, bsums);

#[inline(always)]
unsafe fn kquant_tile<K: KQuant, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut u = Unpacked {
        q: [vdupq_n_s8(0); 16],
        sc: [0; 16],
        mins: [0; 16],
        d: 0.0,
        dmin: 0.0,
    };
    let mut out = [0f32; MAX_NT];
    for i in 0..w.len() / K::BYTES {
        K::unpack(wp.add(i * K::BYTES), &mut u);
        for (t, o) in out.iter_mut().enumerate().take(NT) {
            let a = xp.add(t * x_stride + i * ACT_BYTES);
            let da = (a as *const f32).read_unaligned();
            let qa = a.add(ACT_QS) as *const i8;
            let mut sum = 0i32;
            for s in 0..16 {
                sum += u.sc[s] * vaddvq_s32(dot16(u.q[s], vld1q_s8(qa.add(16 * s))));
            }
            *o += da * u.d * sum as f32;
            if K::MINS {
                let bsums = a.add(ACT_BSUMS) as *const i16;
                let m: i32 = (0..16)
                    .map(|s| u.mins[s] * bsums.add(s).read_unaligned() as i32)
                    .sum();
                *o -= da * u.dmin * m as f32;
            }
        }
    }
    out
}

/// Float weights: F32 as is, BF16 widened by a 16-bit shift.
trait FloatElem {
    const BYTES: usize;
    unsafe fn load4(p: *const u8) -> float32x4_t;
    fn scalar(p: &[u8]) -> f32;
}

struct F32;
impl FloatElem for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> float32x4_t {
        vld1q_f32(p as *const f32)
    }
    fn scalar(p: &[u8]) -> f32 {
        f32::from_le_bytes([p[0], p[1], p[2], p[3]])
    }
}

struct BF16;
impl FloatElem for BF16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p as *const u16), 16))
    }
    fn scalar(p: &[u8]) -> f32 {
        half::bf16::from_le_bytes([p[0], p[1]]).to_f32()
    }
}

#[inline(always)]
unsafe fn float_tile<E: FloatElem, const NT: usize>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
) -> [f32; MAX_NT] {
    let n = w.len() / E::BYTES;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [[vdupq_n_f32(0.0); 2]; NT];
    let mut i = 0;
    while i + 8 <= n {
        let w0 = E::load4(wp.add(i * E::BYTES));
        let w1 = E::load4(wp.add((i + 4) * E::BYTES));
        for (t, acc) in acc.iter_mut().enumerate() {
            let xt = xp.add(t * x_stride + 4 * i) as *const f32;
            acc[0] = vfmaq_f32(acc[0], w0, vld1q_f32(xt));
            acc[1] = vfmaq_f32(acc[1], w1, vld1q_f32(xt.add(4)));
        }
        i += 8;
    }
    let mut out = [0f32; MAX_NT];
    for (t, acc) in acc.iter().enumerate() {
        let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
        for j in i..n {
            let xj = f32::from_le_bytes(x[t * x_stride + 4 * j..][..4].try_into().unwrap());
            s += E::scalar(&w[j * E::BYTES..]) * xj;
        }
        out[t] = s;
    }
    out
}

tile_entries!(
    q4_0 => block32_tile::<Q4_0>;
    q4_1 => block32_tile::<Q4_1>;
    q5_0 => block32_tile::<Q5_0>;
    q5_1 => block32_tile::<Q5_1>;
    q8_0 => block32_tile::<Q8_0>;
    iq4_nl => block32_tile::<IQ4NL>;
    q2_k => kquant_tile::<Q2K>;
    q3_k => kquant_tile::<Q3K>;
    q4_k => kquant_tile::<Q4K>;
    q5_k => kquant_tile::<Q5K>;
    q6_k => kquant_tile::<Q6K>;
    iq4_xs => kquant_tile::<IQ4XS>;
    f32_neon => float_tile::<F32>;
    bf16_neon => float_tile::<BF16>;
);

pub(super) fn kernel(ty: GgmlType) -> Option<TileFn> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => q4_0,
        T::Q4_1 => q4_1,
        T::Q5_0 => q5_0,
        T::Q5_1 => q5_1,
        T::Q8_0 => q8_0,
        T::IQ4NL => iq4_nl,
        T::Q2K => q2_k,
        T::Q3K => q3_k,
        T::Q4K => q4_k,
        T::Q5K => q5_k,
        T::Q6K => q6_k,
        T::IQ4XS => iq4_xs,
        T::F32 => f32_neon,
        T::BF16 => bf16_neon,
        _ => return None,
    })
}
