//! Vector math for attention: y += a·x and the exponentials of softmax. Written as plain loops
//! over branch-free arithmetic and compiled twice, once for the portable baseline and once with
//! AVX2+FMA enabled, where the compiler vectorizes them 8 lanes wide; one source, no twins.

use super::features::features;

/// exp(x) to within about 2 ulp (Cephes' single-precision method: x = n·ln2 + r, a degree-6
/// polynomial for e^r, 2^n from the exponent bits). Saturates outside [−87.3, 88]: below gives about
/// 1e−38 instead of underflowing to 0, above gives e^88 ≈ 1.7e38; softmax needs neither.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so n·C1 is exact in f32.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.336_55, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * C1 - n * C2;
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    // n is in −126..=127 after the clamp, so the shifted bits form a normal power of two.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn exp_shift_sum_body(x: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    sum
}

#[inline(always)]
fn axpy_body(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shift_sum(x: &mut [f32], max: f32) -> f32 {
        super::exp_shift_sum_body(x, max)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body(a, x, y)
    }
}

/// x ← exp(x − max); returns Σ of the results (the softmax numerators and their sum).
pub fn exp_shift_sum(x: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if features().has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::exp_shift_sum(x, max) };
    }
    exp_shift_sum_body(x, max)
}

/// y ← y + a·x.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if features().has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::axpy(a, x, y) };
    }
    axpy_body(a, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_three_ulp_of_float64() {
        let mut worst = 0f64;
        let mut xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * (175.0 / 200_000.0))
            .collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 88.0, -87.0]);
        let mut got = xs.clone();
        exp_shift_sum(&mut got, 0.0);
        for (x, g) in xs.iter().zip(&got) {
            let want = (*x as f64).exp();
            let ulp = (want as f32).abs() * f32::EPSILON;
            worst = worst.max(((*g as f64 - want) / ulp as f64).abs());
        }
        assert!(worst < 3.0, "worst error {worst} ulp");
        // portable path agrees with the dispatched one
        let mut p = xs.clone();
        exp_shift_sum_body(&mut p, 0.0);
        for (a, b) in p.iter().zip(&got) {
            assert!((a - b).abs() <= 2.0 * f32::EPSILON * a.abs());
        }
    }

    #[test]
    fn softmax_numerators_and_sum() {
        let scores: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.731).sin() * 12.0).collect();
        let max = scores.iter().copied().fold(f32::MIN, f32::max);
        let mut e = scores.clone();
        let sum = exp_shift_sum(&mut e, max);
        let want: f64 = scores.iter().map(|s| (*s as f64 - max as f64).exp()).sum();
        assert!(((sum as f64 - want) / want).abs() < 1e-6, "{sum} vs {want}");
    }

    #[test]
    fn exp_saturates_instead_of_overflowing() {
        let mut x = [-1e30f32, -200.0, 100.0];
        exp_shift_sum(&mut x, 0.0);
        assert!(x[0] >= 0.0 && x[0] < 1e-37 && x[1] < 1e-37);
        assert!(x[2].is_finite() && x[2] > 1e38);
    }

    #[test]
    fn axpy_matches_float64() {
        for n in [0, 1, 7, 8, 9, 64, 100] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: Vec<f64> = x
                .iter()
                .zip(&y)
                .map(|(x, y)| 0.3f64 * *x as f64 + *y as f64)
                .collect();
            axpy(0.3, &x, &mut y);
            for (g, w) in y.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6);
            }
        }
    }
}
