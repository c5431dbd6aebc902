//! The scalar conversions ggml's reference quantizers are built from. Each reproduces what the C
//! code does on x86-64 (SSE2 float arithmetic, no FMA contraction), including its behaviour on
//! out-of-range and non-finite input, because byte-exact output depends on it.

use half::f16;

/// Amplitudes below this count as an all-zero group (ggml's GROUP_MAX_EPS).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adding 1.5·2²³ leaves the rounded integer (ties to even) in the low
/// mantissa bits. Out of range or NaN it still returns what those bits say (NaN gives 0), exactly
/// like the C code with asserts disabled.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// A C cast from float to a 32-bit (or narrower) integer as x86 performs it (`cvttss2si`):
/// truncation toward zero, and the "integer indefinite" value i32::MIN for NaN and out-of-range
/// input, where Rust's `as` would saturate instead.
#[inline(always)]
pub fn c_trunc(x: f32) -> i32 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// `(int)roundf(x)` as x86 computes it (`c_trunc(x.round())`), without the libm call: below
/// 2²³ in magnitude the fraction `x - trunc(x)` is exact, so comparing it with ±0.5 rounds half
/// away from zero exactly; larger, infinite and NaN input take the general path.
#[inline(always)]
pub fn round_c_int(x: f32) -> i32 {
    if x.abs() < 8_388_608.0 {
        let t = x as i32;
        let frac = x - t as f32;
        t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32
    } else {
        c_trunc(x.round())
    }
}

/// C's `MAX(a, b)` macro (`a > b ? a : b`), whose NaN handling differs from `f32::max`.
#[inline(always)]
pub fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// GGML_FP32_TO_FP16: round to nearest even, overflow to infinity, every NaN to the canonical
/// quiet NaN 0x7E00 (with the input's sign).
#[inline]
pub fn to_f16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        f16::from_bits(sign | 0x7e00)
    } else {
        f16::from_f32(x)
    }
}

/// Lanes of the element scans below, which vector units run side by side.
const LANES: usize = 8;

/// The signed element of largest magnitude (the first one on ties) and that magnitude; NaNs never
/// win. The running maximum of `|v| > amax` updates is taken in lanes (the largest magnitude does
/// not depend on the order), then the first element of that magnitude is the one the sequential
/// scan would have kept.
#[inline(always)]
pub fn abs_max(x: &[f32]) -> (f32, f32) {
    let mut lanes = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in chunks.by_ref() {
        for k in 0..LANES {
            let a = c[k].abs();
            if a > lanes[k] {
                lanes[k] = a;
            }
        }
    }
    let mut amax = lanes.iter().fold(0f32, |m, &a| if a > m { a } else { m });
    for &v in chunks.remainder() {
        if v.abs() > amax {
            amax = v.abs();
        }
    }
    if amax == 0.0 {
        return (0.0, 0.0);
    }
    let max = *x
        .iter()
        .find(|v| v.abs() == amax)
        .expect("amax is one of the magnitudes");
    (amax, max)
}

/// `x.iter().fold(0, |m, v| c_max(m, v.abs()))`, the C loop `amax = MAX(amax, fabsf(x))`. Without
/// NaNs that is the largest magnitude, found in lanes; a NaN makes the result depend on where it
/// sits, so then the scan runs in order.
#[inline(always)]
pub fn c_abs_max(x: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut nan = false;
    let mut chunks = x.chunks_exact(LANES);
    for c in chunks.by_ref() {
        for k in 0..LANES {
            let a = c[k].abs();
            nan |= a.is_nan();
            lanes[k] = c_max(lanes[k], a);
        }
    }
    let rest = chunks.remainder();
    if nan || rest.iter().any(|v| v.is_nan()) {
        return x.iter().fold(0f32, |m, &v| c_max(m, v.abs()));
    }
    let m = lanes.iter().fold(0f32, |m, &a| c_max(m, a));
    rest.iter().fold(m, |m, &v| c_max(m, v.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_scans_match_the_sequential_loops() {
        let seq_abs_max = |x: &[f32]| {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            (amax, max)
        };
        let seq_c_abs_max = |x: &[f32]| x.iter().fold(0f32, |m, &v| c_max(m, v.abs()));
        let mut s = 0x9e37_79b9u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        for case in 0..20_000 {
            let n = [16, 32, 35, 256, 7][case % 5];
            let mut x: Vec<f32> = (0..n)
                .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
                .collect();
            match case % 7 {
                // ties of equal magnitude and opposite sign
                0 => {
                    let i = next() as usize % n;
                    x[i] = -x[(i + 3) % n];
                }
                1 => x[next() as usize % n] = f32::NAN,
                2 => x.iter_mut().for_each(|v| *v = 0.0),
                3 => x[next() as usize % n] = f32::INFINITY,
                4 => x.iter_mut().for_each(|v| *v = -0.0),
                _ => {}
            }
            let (a, m) = abs_max(&x);
            let (sa, sm) = seq_abs_max(&x);
            assert_eq!(
                (a.to_bits(), m.to_bits()),
                (sa.to_bits(), sm.to_bits()),
                "{x:?}"
            );
            assert_eq!(
                c_abs_max(&x).to_bits(),
                seq_c_abs_max(&x).to_bits(),
                "{x:?}"
            );
        }
    }

    #[test]
    fn round_c_int_is_roundf_then_a_c_cast() {
        let mut cases = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            0.50000006,
            127.49999,
            127.5,
            -127.5,
            8_388_607.5,
            8_388_608.0,
            -8_388_609.0,
            3e9,
            -3e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            cases.push(f32::from_bits(s));
            cases.push((s % 100_000) as f32 / 256.0 - 190.0);
        }
        for x in cases {
            assert_eq!(
                round_c_int(x),
                c_trunc(x.round()),
                "{x:e} ({:#x})",
                x.to_bits()
            );
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.51, -8),
            (4_194_303.0, 4_194_303),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "{x}");
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
        }
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    /// ggml's software fp32 -> fp16 (the Maratyszcza FP16 algorithm), written out bit by bit as an
    /// independent oracle for `to_f16`.
    fn ggml_fp16_oracle(f: f32) -> u16 {
        let scale_to_inf = f32::from_bits(0x7780_0000);
        let scale_to_zero = f32::from_bits(0x0880_0000);
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        let mut bias = shl1_w & 0xff00_0000;
        if bias < 0x7100_0000 {
            bias = 0x7100_0000;
        }
        base += f32::from_bits((bias >> 1) + 0x0780_0000);
        let bits = base.to_bits();
        let exp_bits = (bits >> 13) & 0x7c00;
        let mantissa_bits = bits & 0x0fff;
        let nonsign = exp_bits + mantissa_bits;
        ((sign >> 16)
            | if shl1_w > 0xff00_0000 {
                0x7e00
            } else {
                nonsign
            }) as u16
    }

    #[test]
    fn fp16_conversion_matches_ggml_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let check = |x: f32| assert_eq!(to_f16(x).to_bits(), ggml_fp16_oracle(x), "{x:e}");
        for x in [
            0.0,
            -0.0,
            65504.0,
            65520.0,
            1e9,
            -1e9,
            6.0e-8,
            2.9e-8,
            3.0e-8,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ] {
            check(x);
        }
        for _ in 0..200_000 {
            check(f32::from_bits(rng.random()));
        }
    }
}
