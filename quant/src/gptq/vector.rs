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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

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
}
