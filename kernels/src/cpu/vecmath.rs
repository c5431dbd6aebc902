//! Vector math for attention and the MLP: the exponentials of softmax and SwiGLU. Written as
//! plain loops over branch-free arithmetic and compiled for the portable baseline, AVX2+FMA and
//! AVX-512, where the compiler vectorizes them 8 or 16 lanes wide; one source, no twins.

#[cfg(target_arch = "x86_64")]
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
    // n is in −126..=127 after the clamp, so the shifted bits form a normal power of two. The
    // unchecked conversion is one vector instruction, where `as` saturates lane by lane; a NaN
    // input (which the clamp passes through) stays NaN through `e`.
    // SAFETY: n is integral and within −126..=127 (NaN is excluded here).
    let n = if n.is_nan() {
        0
    } else {
        unsafe { n.to_int_unchecked::<i32>() }
    };
    e * f32::from_bits(((n + 127) as u32) << 23)
}

#[inline(always)]
fn exp_shift_sum_body(x: &mut [f32], max: f32) -> f32 {
    // v·1 − max in one rounding is v − max.
    exp_affine_sum_body(x, 1.0, max)
}

/// x ← exp(scale·x − shift); returns Σ of the results.
#[inline(always)]
fn exp_affine_sum_body(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    // Sixteen running sums, one per lane: a single sum would fix the order of the additions
    // and keep the compiler from vectorizing the loop.
    const L: usize = 16;
    let mut lanes = [0f32; L];
    let mut chunks = x.chunks_exact_mut(L);
    for c in &mut chunks {
        for (v, s) in c.iter_mut().zip(lanes.iter_mut()) {
            *v = exp_approx(v.mul_add(scale, -shift));
            *s += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp_approx(v.mul_add(scale, -shift));
        sum += *v;
    }
    sum + lanes.iter().sum::<f32>()
}

/// x ← exp(scale·x − scale·max x), the numerators of softmax(scale·x); returns their sum. The
/// max in 16 lanes, like the sums above; the scaling folded into the exponent's argument.
#[inline(always)]
fn softmax_numerators_body(x: &mut [f32], scale: f32) -> f32 {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = x.chunks_exact(L);
    for c in &mut chunks {
        for (v, m) in c.iter().zip(lanes.iter_mut()) {
            *m = if *v > *m { *v } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    exp_affine_sum_body(x, scale, scale * max)
}

#[inline(always)]
fn swiglu_body(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_approx(-*g)) * u;
    }
}

/// `pub fn $name` running `$body` compiled for AVX-512, for AVX2 + FMA or for the portable
/// baseline, the widest this CPU has: one source per kernel, the dispatch written once.
macro_rules! widest {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if features().avx512f && features().has_avx2_fma() {
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if features().has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

widest! {
    /// x ← exp(x − max); returns Σ of the results (the softmax numerators and their sum).
    pub fn exp_shift_sum(x: &mut [f32], max: f32) -> f32 = exp_shift_sum_body;
}

widest! {
    /// x ← exp(scale·x − scale·max x), the numerators of softmax(scale·x) over one row of
    /// attention scores; returns their sum.
    pub fn softmax_numerators(x: &mut [f32], scale: f32) -> f32 = softmax_numerators_body;
}

widest! {
    /// gate ← silu(gate) · up = gate / (1 + e^−gate) · up (SwiGLU), with the exponential above.
    pub fn swiglu(gate: &mut [f32], up: &[f32]) = swiglu_body;
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
    fn scaled_softmax_numerators_match_float64() {
        for n in [1, 15, 16, 17, 100, 513] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.913).cos() * 40.0).collect();
            for scale in [0.125f32, 0.3] {
                let mut got = x.clone();
                let sum = softmax_numerators(&mut got, scale);
                let mut p = x.clone();
                let psum = softmax_numerators_body(&mut p, scale);
                let max = x.iter().map(|v| *v as f64).fold(f64::MIN, f64::max);
                let e: Vec<f64> = x
                    .iter()
                    .map(|v| (*v as f64 - max) * scale as f64)
                    .map(f64::exp)
                    .collect();
                let want_sum: f64 = e.iter().sum();
                assert!(((sum as f64 - want_sum) / want_sum).abs() < 1e-5, "n {n}");
                assert!((sum - psum).abs() <= 1e-6 * sum, "portable sum");
                for ((g, p), e) in got.iter().zip(&p).zip(&e) {
                    assert!((*g as f64 - e).abs() <= 1e-5 * e + 1e-30, "{g} vs {e}");
                    assert!(
                        (p - g).abs() <= 4.0 * f32::EPSILON * g.abs(),
                        "portable path"
                    );
                }
            }
        }
    }

    #[test]
    fn exp_saturates_instead_of_overflowing() {
        let mut x = [-1e30f32, -200.0, 100.0];
        exp_shift_sum(&mut x, 0.0);
        assert!(x[0] >= 0.0 && x[0] < 1e-37 && x[1] < 1e-37);
        assert!(x[2].is_finite() && x[2] > 1e38);
    }

    #[test]
    fn swiglu_matches_float64() {
        let n = 1000;
        let g0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 30.0).collect();
        let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 2.0).collect();
        let mut g = g0.clone();
        g.extend([100.0, -100.0, 0.0]);
        let mut u2 = u.clone();
        u2.extend([1.0, 1.0, 1.0]);
        swiglu(&mut g, &u2);
        for i in 0..n + 3 {
            let x = if i < n {
                g0[i] as f64
            } else {
                [100.0, -100.0, 0.0][i - n]
            };
            let want = x / (1.0 + (-x).exp()) * u2[i] as f64;
            assert!(
                (g[i] as f64 - want).abs() <= 4e-7 * want.abs() + 1e-30,
                "{x}: {} vs {want}",
                g[i]
            );
        }
    }
}
