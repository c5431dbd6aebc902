//! The inner loops of the GPTQ factorization and solver (dot products, y −= a·x), as plain Rust
//! compiled three times on x86_64: for the portable baseline, with AVX2+FMA and with AVX-512,
//! where LLVM vectorizes the same source 4 or 8 doubles (8 or 16 floats) wide and fuses the
//! multiply-adds. The widest version the CPU runs is picked once. No intrinsics, one source.

use std::sync::OnceLock;

use crate::groupq::Real;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var("QUANTIZE_CPU").is_ok_and(|v| v == "scalar") {
                return Level::Base;
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Base
    })
}

/// Lanes per partial sum: enough independent chains to keep two FMA units busy.
const W: usize = 8;

#[inline(always)]
fn madd<T: Real, const FMA: bool>(a: T, b: T, c: T) -> T {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Σ a·b in W independent lanes (the form LLVM maps onto vector registers without
/// reassociating), b as long as a.
#[inline(always)]
fn dot_body<T: Real, const FMA: bool>(a: &[T], b: &[T]) -> T {
    let zero = T::from_f64(0.0);
    let mut acc = [zero; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..W {
            acc[l] = madd::<T, FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut s = zero;
    for v in acc {
        s += v;
    }
    for (x, y) in ra.iter().zip(rb) {
        s = madd::<T, FMA>(*x, *y, s);
    }
    s
}

/// K dot products of `a` with `b[0..K]` (all as long as `a`), one after the other: `a` stays
/// in L1 between them, and single reductions are what the vectorizer handles well.
#[inline(always)]
fn dots_body<T: Real, const K: usize, const FMA: bool>(a: &[T], b: [&[T]; K]) -> [T; K] {
    // A loop, not `map`: a closure would not inherit the caller's target features.
    let mut out = [T::from_f64(0.0); K];
    for k in 0..K {
        out[k] = dot_body::<T, FMA>(a, b[k]);
    }
    out
}

/// y −= a·x.
#[inline(always)]
fn sub_scaled_body<T: Real, const FMA: bool>(y: &mut [T], a: T, x: &[T]) {
    let na = -a;
    for (y, x) in y.iter_mut().zip(x) {
        *y = madd::<T, FMA>(na, *x, *y);
    }
}

/// The strided operands of [`sub_products`].
#[derive(Clone, Copy)]
pub struct Products<'a, T> {
    /// a[r·a_stride + k]: the coefficient of x_k in row r.
    pub a: &'a [T],
    pub a_stride: usize,
    /// x_k = xs[k·x_stride ..][..len].
    pub xs: &'a [T],
    pub x_stride: usize,
    /// k runs over 0..nk.
    pub nk: usize,
}

/// Columns per register block: 32 floats are two AVX-512 registers, so R = 4 rows keep 8 (or
/// 16 for f64) accumulators.
const CW: usize = 32;

/// Rows r0..r0+R of [`sub_products`] over columns c0..c0+CW, each y accumulated in a local
/// block (vector registers or L1) across every k in order.
#[inline(always)]
fn sub_products_block<T: Real, const R: usize, const FMA: bool>(
    ys: &mut [T],
    stride: usize,
    r0: usize,
    c0: usize,
    p: &Products<T>,
) {
    let mut acc = [[T::from_f64(0.0); CW]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&ys[(r0 + r) * stride + c0..][..CW]);
    }
    for k in 0..p.nk {
        let x = &p.xs[k * p.x_stride + c0..][..CW];
        for (r, a) in acc.iter_mut().enumerate() {
            let na = -p.a[(r0 + r) * p.a_stride + k];
            for (a, x) in a.iter_mut().zip(x) {
                *a = madd::<T, FMA>(na, *x, *a);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        ys[(r0 + r) * stride + c0..][..CW].copy_from_slice(a);
    }
}

#[inline(always)]
fn sub_products_body<T: Real, const FMA: bool>(
    ys: &mut [T],
    stride: usize,
    nr: usize,
    len: usize,
    p: &Products<T>,
) {
    let full = len / CW * CW;
    let mut r0 = 0;
    while r0 + 4 <= nr {
        for c0 in (0..full).step_by(CW) {
            sub_products_block::<T, 4, FMA>(ys, stride, r0, c0, p);
        }
        r0 += 4;
    }
    for r in r0..nr {
        for c0 in (0..full).step_by(CW) {
            sub_products_block::<T, 1, FMA>(ys, stride, r, c0, p);
        }
    }
    // The columns past the last block, element by element in the same order of k.
    for r in 0..nr {
        for c in full..len {
            let mut y = ys[r * stride + c];
            for k in 0..p.nk {
                y = madd::<T, FMA>(-p.a[r * p.a_stride + k], p.xs[k * p.x_stride + c], y);
            }
            ys[r * stride + c] = y;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sub_products_avx2<T: Real>(
        ys: &mut [T],
        stride: usize,
        nr: usize,
        len: usize,
        p: &Products<T>,
    ) {
        sub_products_body::<T, true>(ys, stride, nr, len, p)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn sub_products_avx512<T: Real>(
        ys: &mut [T],
        stride: usize,
        nr: usize,
        len: usize,
        p: &Products<T>,
    ) {
        sub_products_body::<T, true>(ys, stride, nr, len, p)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_avx2<T: Real, const K: usize>(a: &[T], b: [&[T]; K]) -> [T; K] {
        dots_body::<T, K, true>(a, b)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn dots_avx512<T: Real, const K: usize>(a: &[T], b: [&[T]; K]) -> [T; K] {
        dots_body::<T, K, true>(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sub_scaled_avx2<T: Real>(y: &mut [T], a: T, x: &[T]) {
        sub_scaled_body::<T, true>(y, a, x)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn sub_scaled_avx512<T: Real>(y: &mut [T], a: T, x: &[T]) {
        sub_scaled_body::<T, true>(y, a, x)
    }
}

/// `[Σ a·b_k for each k]`; every `b_k` at least as long as `a`.
#[inline]
pub fn dots<T: Real, const K: usize>(a: &[T], b: [&[T]; K]) -> [T; K] {
    let b = b.map(|x| &x[..a.len()]);
    match level() {
        // SAFETY: the CPU has the features (checked in `level`).
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::dots_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::dots_avx2(a, b) },
        Level::Base => dots_body::<T, K, false>(a, b),
    }
}

/// y −= a·x over the length of `y` (x at least as long).
#[inline]
pub fn sub_scaled<T: Real>(y: &mut [T], a: T, x: &[T]) {
    let x = &x[..y.len()];
    match level() {
        // SAFETY: the CPU has the features (checked in `level`).
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::sub_scaled_avx512(y, a, x) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::sub_scaled_avx2(y, a, x) },
        Level::Base => sub_scaled_body::<T, false>(y, a, x),
    }
}

/// For each row r < nr: y_r −= a[r][k]·x_k for k = 0, 1, … in turn, where y_r =
/// ys[r·stride ..][..len]: the same operations, in the same order, as `sub_scaled` per k (so
/// the same bits), with each block of y kept local across k instead of reloaded for every k.
pub fn sub_products<T: Real>(ys: &mut [T], stride: usize, nr: usize, len: usize, p: &Products<T>) {
    assert!(nr == 0 || (nr - 1) * stride + len <= ys.len());
    assert!(p.nk == 0 || (p.nk - 1) * p.x_stride + len <= p.xs.len());
    assert!(nr == 0 || p.nk == 0 || (nr - 1) * p.a_stride + p.nk <= p.a.len());
    match level() {
        // SAFETY: the CPU has the features (checked in `level`).
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::sub_products_avx512(ys, stride, nr, len, p) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::sub_products_avx2(ys, stride, nr, len, p) },
        Level::Base => sub_products_body::<T, false>(ys, stride, nr, len, p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_and_updates_match_direct_sums() {
        let a: Vec<f64> = (0..37).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<Vec<f64>> = (0..3)
            .map(|k| {
                (0..40)
                    .map(|i| ((i * (k + 2)) as f64 * 0.11).cos())
                    .collect()
            })
            .collect();
        let got = dots(&a, [&b[0][..], &b[1][..], &b[2][..]]);
        for k in 0..3 {
            let want: f64 = a.iter().zip(&b[k]).map(|(x, y)| x * y).sum();
            assert!((got[k] - want).abs() < 1e-12);
        }
        let mut y: Vec<f32> = (0..21).map(|i| i as f32).collect();
        let x: Vec<f32> = (0..25).map(|i| 0.5 * i as f32).collect();
        sub_scaled(&mut y, 2.0, &x);
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, i as f32 - 2.0 * 0.5 * i as f32);
        }
    }

    /// Blocked products give the bits of one sub_scaled per k, for row counts and lengths
    /// around the block sizes.
    #[test]
    fn products_equal_repeated_updates_bit_for_bit() {
        let val = |i: usize| ((i * 2_654_435_761usize) % 1000) as f32 / 97.0 - 5.0;
        for (nr, len, nk) in [(1, 5, 3), (4, 32, 7), (6, 70, 128), (9, 33, 1), (3, 0, 4)] {
            let stride = len + 3;
            let ys: Vec<f32> = (0..nr * stride).map(val).collect();
            let a: Vec<f32> = (0..nr * nk).map(|i| val(i + 7)).collect();
            let xs: Vec<f32> = (0..nk * (len + 1)).map(|i| val(i + 13)).collect();
            let p = Products {
                a: &a,
                a_stride: nk,
                xs: &xs,
                x_stride: len + 1,
                nk,
            };
            let mut got = ys.clone();
            sub_products(&mut got, stride, nr, len, &p);
            let mut want = ys.clone();
            for r in 0..nr {
                for k in 0..nk {
                    sub_scaled(
                        &mut want[r * stride..r * stride + len],
                        a[r * nk + k],
                        &xs[k * (len + 1)..],
                    );
                }
            }
            assert_eq!(got, want, "{nr} rows × {len}, {nk} products");
        }
    }
}
