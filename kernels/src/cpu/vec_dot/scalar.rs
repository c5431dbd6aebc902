//! Portable dot products, one per weight type: integer sums per block in the order ggml's generic
//! C code uses, scaled in f32. They are the fallback on CPUs without SIMD kernels and the
//! reference the SIMD versions are compared with.

use half::{bf16, f16};
use quant::ggml::blocks::*;
use quant::ggml::{GgmlType, QK_K};

use super::{TileFn, MAX_NT};

/// A weight block type and the dot of one of its blocks with one activation block.
trait BlockDot {
    type W: Block;
    type A: Block;
    fn dot(w: &Self::W, a: &Self::A) -> f32;
}

/// Dots of one weight row with `nt` activation rows `x_stride` bytes apart.
///
/// # Safety
/// `w` holds whole `K::W` blocks and `x` holds `nt` rows of as many `K::A` blocks as those
/// cover (checked by `DotKernel`).
unsafe fn tile<K: BlockDot>(w: &[u8], x: &[u8], x_stride: usize, nt: usize) -> [f32; MAX_NT] {
    let (wb, ab) = (size_of::<K::W>(), size_of::<K::A>());
    // Every weight type's block covers exactly one activation block.
    debug_assert_eq!(K::W::TYPE.block_size(), K::A::TYPE.block_size());
    let nb = w.len() / wb;
    let mut out = [0f32; MAX_NT];
    for (t, o) in out.iter_mut().enumerate().take(nt) {
        let x = &x[t * x_stride..];
        for i in 0..nb {
            let wi: K::W = bytemuck::pod_read_unaligned(&w[i * wb..(i + 1) * wb]);
            let ai: K::A = bytemuck::pod_read_unaligned(&x[i * ab..(i + 1) * ab]);
            *o += K::dot(&wi, &ai);
        }
    }
    out
}

fn nibble(qs: &[u8], j: usize) -> u8 {
    // Elements 0..16 of a 32-block are low nibbles, 16..32 high nibbles of the same bytes.
    if j < 16 {
        qs[j] & 0xF
    } else {
        qs[j - 16] >> 4
    }
}

fn fifth_bit(qh: [u8; 4], j: usize) -> u8 {
    (((u32::from_le_bytes(qh) >> j) & 1) << 4) as u8
}

/// Σ q(j)·a[j] over a 32-element block.
fn sum32(q: impl Fn(usize) -> i32, a: &[i8]) -> i32 {
    (0..32).map(|j| q(j) * a[j] as i32).sum()
}

macro_rules! block32 {
    ($name:ident, $w:ty, $a:ty, |$b:ident, $x:ident| $body:expr) => {
        pub(super) struct $name;
        impl BlockDot for $name {
            type W = $w;
            type A = $a;
            fn dot($b: &$w, $x: &$a) -> f32 {
                $body
            }
        }
    };
}

block32!(Q4_0, BlockQ4_0, BlockQ8_0, |b, a| {
    let s = sum32(|j| nibble(&b.qs, j) as i32 - 8, &a.qs);
    s as f32 * b.d.to_f32() * a.d.to_f32()
});
block32!(Q4_1, BlockQ4_1, BlockQ8_1, |b, a| {
    let s = sum32(|j| nibble(&b.qs, j) as i32, &a.qs);
    s as f32 * b.d.to_f32() * a.d.to_f32() + b.m.to_f32() * a.s.to_f32()
});
block32!(Q5_0, BlockQ5_0, BlockQ8_0, |b, a| {
    let s = sum32(
        |j| (nibble(&b.qs, j) | fifth_bit(b.qh, j)) as i32 - 16,
        &a.qs,
    );
    s as f32 * b.d.to_f32() * a.d.to_f32()
});
block32!(Q5_1, BlockQ5_1, BlockQ8_1, |b, a| {
    let s = sum32(|j| (nibble(&b.qs, j) | fifth_bit(b.qh, j)) as i32, &a.qs);
    s as f32 * b.d.to_f32() * a.d.to_f32() + b.m.to_f32() * a.s.to_f32()
});
block32!(Q8_0, BlockQ8_0, BlockQ8_0, |b, a| {
    let s = sum32(|j| b.qs[j] as i32, &a.qs);
    s as f32 * b.d.to_f32() * a.d.to_f32()
});
block32!(IQ4NL, BlockIQ4NL, BlockQ8_0, |b, a| {
    let s = sum32(|j| IQ4_VALUES[nibble(&b.qs, j) as usize] as i32, &a.qs);
    s as f32 * b.d.to_f32() * a.d.to_f32()
});

/// Σ over a super-block of scale(e / 16)·q(e)·a[e], with the scale index per 16 elements.
fn ksum(q: impl Fn(usize) -> i32, scale16: impl Fn(usize) -> i32, a: &BlockQ8K) -> i32 {
    (0..QK_K / 16)
        .map(|s| {
            scale16(s)
                * (16 * s..16 * s + 16)
                    .map(|e| q(e) * a.qs[e] as i32)
                    .sum::<i32>()
        })
        .sum()
}

/// Σ over the 16-element sub-blocks of m(s)·Σa: the product of the minimums with the activations.
fn kmins(m16: impl Fn(usize) -> i32, a: &BlockQ8K) -> i32 {
    (0..QK_K / 16).map(|s| m16(s) * a.bsums[s] as i32).sum()
}

/// The 2-bit field of element `e` in the Q2_K/Q3_K packing: per 128 elements, byte l of 32 holds
/// elements l, l+32, l+64, l+96 at bit offsets 0, 2, 4, 6.
fn crumb(qs: &[u8], e: usize) -> i32 {
    let (c, g, l) = (e / 128, (e / 32) % 4, e % 32);
    ((qs[32 * c + l] >> (2 * g)) & 3) as i32
}

/// Element `e`'s 4-bit field in the Q4_K/Q5_K packing: per 64 elements, low nibbles then high.
fn k_nibble(qs: &[u8], e: usize) -> i32 {
    let (c, hi, l) = (e / 64, (e / 32) % 2, e % 32);
    ((qs[32 * c + l] >> (4 * hi)) & 0xF) as i32
}

macro_rules! kquant {
    ($name:ident, $w:ty, |$b:ident, $a:ident| $body:expr) => {
        block32!($name, $w, BlockQ8K, |$b, $a| $body);
    };
}

kquant!(Q2K, BlockQ2K, |b, a| {
    let s = ksum(|e| crumb(&b.qs, e), |s| (b.scales[s] & 0xF) as i32, a);
    let m = kmins(|s| (b.scales[s] >> 4) as i32, a);
    a.d * (b.d.to_f32() * s as f32 - b.dmin.to_f32() * m as f32)
});
kquant!(Q3K, BlockQ3K, |b, a| {
    let sc = q3k_scales(&b.scales);
    let q = |e: usize| {
        let high = (b.hmask[e % 32] >> (e / 32)) & 1;
        crumb(&b.qs, e) - if high == 0 { 4 } else { 0 }
    };
    let s = ksum(q, |s| sc[s] as i32 - 32, a);
    a.d * b.d.to_f32() * s as f32
});
kquant!(Q4K, BlockQ4K, |b, a| {
    let s = ksum(
        |e| k_nibble(&b.qs, e),
        |s| scale_min_k4(s / 2, &b.scales).0 as i32,
        a,
    );
    let m = kmins(|s| scale_min_k4(s / 2, &b.scales).1 as i32, a);
    a.d * (b.d.to_f32() * s as f32 - b.dmin.to_f32() * m as f32)
});
kquant!(Q5K, BlockQ5K, |b, a| {
    let q = |e: usize| k_nibble(&b.qs, e) | ((((b.qh[e % 32] >> (e / 32)) & 1) as i32) << 4);
    let s = ksum(q, |s| scale_min_k4(s / 2, &b.scales).0 as i32, a);
    let m = kmins(|s| scale_min_k4(s / 2, &b.scales).1 as i32, a);
    a.d * (b.d.to_f32() * s as f32 - b.dmin.to_f32() * m as f32)
});
kquant!(Q6K, BlockQ6K, |b, a| {
    // Per 128 elements: ql[l] = lo(l) | lo(l+64) << 4, ql[l+32] = lo(l+32) | lo(l+96) << 4,
    // qh[l] = the high 2 bits of l, l+32, l+64, l+96.
    let q = |e: usize| {
        let (n, g, l) = (e / 128, (e / 32) % 4, e % 32);
        let lo = (b.ql[64 * n + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0xF;
        let hi = (b.qh[32 * n + l] >> (2 * g)) & 3;
        (lo | (hi << 4)) as i32 - 32
    };
    let s = ksum(q, |s| b.scales[s] as i32, a);
    a.d * b.d.to_f32() * s as f32
});
kquant!(IQ4XS, BlockIQ4XS, |b, a| {
    let q = |e: usize| IQ4_VALUES[nibble(&b.qs[16 * (e / 32)..], e % 32) as usize] as i32;
    let ls = |g: usize| {
        let lo = (b.scales_l[g / 2] >> (4 * (g % 2))) & 0xF;
        let hi = (b.scales_h >> (2 * g)) & 3;
        (lo as i32 | ((hi as i32) << 4)) - 32
    };
    let s = ksum(q, |s| ls(s / 2), a);
    a.d * b.d.to_f32() * s as f32
});

/// An element type of float weights.
trait FloatElem: bytemuck::Pod {
    fn to_f32(self) -> f32;
}
impl FloatElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}
impl FloatElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}
impl FloatElem for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// Float weights times f32 activations, with eight partial sums like the SIMD versions.
///
/// # Safety
/// `x` holds `nt` rows of `w.len() / size_of::<T>()` f32 values, `x_stride` bytes apart.
unsafe fn float_tile<T: FloatElem>(
    w: &[u8],
    x: &[u8],
    x_stride: usize,
    nt: usize,
) -> [f32; MAX_NT] {
    let n = w.len() / size_of::<T>();
    let mut out = [0f32; MAX_NT];
    for (t, o) in out.iter_mut().enumerate().take(nt) {
        let xr = &x[t * x_stride..t * x_stride + 4 * n];
        let mut acc = [0f32; 8];
        for i in 0..n {
            let wi: T = bytemuck::pod_read_unaligned(&w[i * size_of::<T>()..][..size_of::<T>()]);
            let xi = f32::from_le_bytes(xr[4 * i..4 * i + 4].try_into().unwrap());
            acc[i % 8] += wi.to_f32() * xi;
        }
        *o = acc.iter().sum();
    }
    out
}

pub(super) fn kernel(ty: GgmlType) -> Option<TileFn> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => float_tile::<f32>,
        T::F16 => float_tile::<f16>,
        T::BF16 => float_tile::<bf16>,
        T::Q4_0 => tile::<Q4_0>,
        T::Q4_1 => tile::<Q4_1>,
        T::Q5_0 => tile::<Q5_0>,
        T::Q5_1 => tile::<Q5_1>,
        T::Q8_0 => tile::<Q8_0>,
        T::IQ4NL => tile::<IQ4NL>,
        T::Q2K => tile::<Q2K>,
        T::Q3K => tile::<Q3K>,
        T::Q4K => tile::<Q4K>,
        T::Q5K => tile::<Q5K>,
        T::Q6K => tile::<Q6K>,
        T::IQ4XS => tile::<IQ4XS>,
        T::Q8_1 | T::Q8K => return None,
    })
}
