//! The activation quantizers at every level against a transliteration of ggml's reference
//! quantizers (quantize_row_q8_0_ref, _q8_1_ref, _q8_K_ref): the bytes must be identical.

mod common;

use bytemuck::Zeroable;
use common::rng;
use half::f16;
use kernels::cpu::q8::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
use kernels::cpu::Isa;
use quant::ggml::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use rand::Rng;

/// ggml: amax = max|x|; d = amax/127; id = d ? 1/d : 0; q = roundf(x·id).
fn ref_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    x.chunks(32)
        .map(|x| {
            let mut amax = 0f32;
            for v in x {
                if v.abs() > amax {
                    amax = v.abs();
                }
            }
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut b = BlockQ8_0::zeroed();
            b.d = f16::from_f32(d);
            for (q, v) in b.qs.iter_mut().zip(x) {
                *q = c_roundf(v * id) as i8;
            }
            b
        })
        .collect()
}

/// ggml: as Q8_0, and s = fp16(Σq · d).
fn ref_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    ref_q8_0(x)
        .iter()
        .zip(x.chunks(32))
        .map(|(b0, x)| {
            let amax = x
                .iter()
                .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
            let d = amax / 127.0;
            let sum: i32 = b0.qs.iter().map(|q| *q as i32).sum();
            BlockQ8_1 {
                d: b0.d,
                s: f16::from_f32(sum as f32 * d),
                qs: b0.qs,
            }
        })
        .collect()
}

/// ggml: max = the first value of largest magnitude; iscale = −127/max;
/// q = min(127, nearest_int(iscale·x)) with nearest_int the 1.5·2²³ trick (ties to even);
/// bsums of each 16; d = 1/iscale.
fn ref_q8_k(x: &[f32]) -> Vec<BlockQ8K> {
    x.chunks(256)
        .map(|x| {
            let mut b = BlockQ8K::zeroed();
            let (mut max, mut amax) = (0f32, 0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                return b;
            }
            let iscale = -127.0 / max;
            for (q, v) in b.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for j in 0..16 {
                b.bsums[j] = (0..16).map(|i| b.qs[16 * j + i] as i16).sum();
            }
            b.d = 1.0 / iscale;
            b
        })
        .collect()
}

/// C's roundf, spelled out: half-way cases away from zero.
fn c_roundf(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + v.signum()
    } else {
        t
    }
}

fn nearest_int(v: f32) -> i32 {
    let f = v + 12582912.0;
    (f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Rows of 512 values: random at several scales, and the edge cases of each format.
fn inputs() -> Vec<Vec<f32>> {
    let mut r = rng(42);
    let n = 512;
    let mut rows: Vec<Vec<f32>> = [1e-6f32, 1.0, 300.0]
        .iter()
        .map(|s| (0..n).map(|_| r.random_range(-1.0..1.0) * s).collect())
        .collect();
    rows.push(vec![0.0; n]);
    rows.push(vec![-2.5; n]);
    // Exact half-way products: with max|x| = 127 the scale is 1, so x·id = x.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    (i % 9) as f32 - 4.5
                }
            })
            .collect(),
    );
    // One outlier per block.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 37 == 0 {
                    -1e4
                } else {
                    r.random_range(-1.0..1.0)
                }
            })
            .collect(),
    );
    // Largest magnitude reached by both signs: Q8_K takes the first one's sign.
    rows.push(
        (0..n)
            .map(|i| match i % 256 {
                3 => -5.0,
                10 => 5.0,
                _ => r.random_range(-4.0..4.0),
            })
            .collect(),
    );
    // Half-way cases of Q8_K's scaled values (ties to even there, away from zero in Q8_0).
    rows.push(
        (0..n)
            .map(|i| {
                if i % 256 == 0 {
                    -127.0
                } else {
                    (i % 7) as f32 + 0.5
                }
            })
            .collect(),
    );
    rows
}

#[test]
fn q8_0_matches_ggml_reference_bytes() {
    for x in inputs() {
        let want = ref_q8_0(&x);
        for isa in Isa::available() {
            let mut got = vec![BlockQ8_0::zeroed(); x.len() / 32];
            quantize_row_q8_0(isa, &x, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }
}

#[test]
fn q8_1_matches_ggml_reference_bytes() {
    for x in inputs() {
        let want = ref_q8_1(&x);
        for isa in Isa::available() {
            let mut got = vec![BlockQ8_1::zeroed(); x.len() / 32];
            quantize_row_q8_1(isa, &x, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }
}

#[test]
fn q8_k_matches_ggml_reference_bytes() {
    for x in inputs() {
        let want = ref_q8_k(&x);
        for isa in Isa::available() {
            let mut got = vec![BlockQ8K::zeroed(); x.len() / 256];
            quantize_row_q8_k(isa, &x, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }
}

#[test]
fn reference_rounding_is_what_the_tests_claim() {
    // Guards the oracle itself: roundf goes away from zero, nearest_int to even.
    assert_eq!(
        (c_roundf(2.5), c_roundf(-3.5), c_roundf(0.49999997)),
        (3.0, -4.0, 0.0)
    );
    assert_eq!(
        (nearest_int(2.5), nearest_int(3.5), nearest_int(-2.5)),
        (2, 4, -2)
    );
}
