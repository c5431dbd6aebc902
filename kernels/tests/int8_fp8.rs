//! The int8 and FP8 matrices against quant's reference codecs and a float64 computation, at
//! every instruction-set level this CPU runs, on random rows and the edge cases of each format
//! (zeros, constants, outliers, exact halves, values beyond a static scale's ±448, NaN and ∞).

mod common;

use common::rng;
use kernels::cpu::int8::{Int8Kernels, NT};
use kernels::cpu::Isa;
use kernels::{
    Fp8Activations, Fp8Matrix, Fp8WeightScale, Int8Activations, Int8Matrix, Matrix,
    ScaledMatrixError,
};
use quant::bytes::SharedBytes;
use quant::fp8::{e4m3_to_f32, quantize_static, quantize_token_dynamic, quantize_token_groups};
use rand::Rng;

const LENGTHS: [usize; 10] = [1, 7, 31, 32, 33, 63, 64, 65, 576, 1536];

fn random_i8(r: &mut impl Rng, n: usize, lo: i8) -> Vec<i8> {
    (0..n).map(|_| r.random_range(lo..=127)).collect()
}

#[test]
fn int8_dots_are_exact_at_every_level() {
    let mut r = rng(1);
    for n in LENGTHS {
        let mut cases = vec![
            (random_i8(&mut r, n, -128), random_i8(&mut r, NT * n, -127)),
            // The largest pair sums: −128 weights against ±127 activations.
            (
                vec![-128; n],
                (0..NT * n)
                    .map(|i| if i % 3 == 0 { -127 } else { 127 })
                    .collect(),
            ),
            (vec![0; n], random_i8(&mut r, NT * n, -127)),
        ];
        cases.push((vec![127; n], vec![127; NT * n]));
        for (w, x) in &cases {
            let want: Vec<i64> = (0..NT)
                .map(|t| (0..n).map(|i| w[i] as i64 * x[t * n + i] as i64).sum())
                .collect();
            for isa in Isa::available() {
                let k = Int8Kernels::new(isa).unwrap();
                for nt in 1..=NT {
                    let got = k.dot_tile(w, x, n, nt);
                    for t in 0..nt {
                        assert_eq!(got[t] as i64, want[t], "{isa:?} n={n} nt={nt} t={t}");
                    }
                }
            }
        }
    }
}

/// Token rows: random at several magnitudes, and each edge case.
fn token_rows(n: usize) -> Vec<Vec<f32>> {
    let mut r = rng(2);
    let mut rows: Vec<Vec<f32>> = [1e-30f32, 1e-3, 1.0, 3e4]
        .iter()
        .map(|s| (0..n).map(|_| r.random_range(-1.0..1.0) * s).collect())
        .collect();
    rows.push(vec![0.0; n]);
    rows.push(vec![-2.5; n]);
    // amax 127 makes 127/amax = 1, so every x + 0.5 is an exact half.
    rows.push(
        (0..n)
            .map(|i| {
                if i == 0 {
                    127.0
                } else {
                    (i % 50) as f32 - 24.5
                }
            })
            .collect(),
    );
    let mut outlier: Vec<f32> = (0..n).map(|_| r.random_range(-0.1..0.1)).collect();
    outlier[n / 2] = 80.0;
    rows.push(outlier);
    let mut nan = rows[2].clone();
    nan[n - 1] = f32::NAN;
    rows.push(nan);
    let mut inf = rows[2].clone();
    inf[0] = f32::INFINITY;
    rows.push(inf);
    rows
}

#[test]
fn int8_token_quantizer_is_bit_identical_to_reference() {
    for n in LENGTHS {
        for x in token_rows(n) {
            let mut want = vec![0i8; n];
            let ws = quant::int8::quantize_token_dynamic(&x, &mut want);
            for isa in Isa::available() {
                let mut got = vec![0i8; n];
                let gs = Int8Kernels::new(isa).unwrap().quantize_token(&x, &mut got);
                assert_eq!((gs.to_bits(), &got), (ws.to_bits(), &want), "{isa:?} n={n}");
            }
            assert!(
                want.iter().all(|q| *q != -128),
                "activations stay in [-127, 127]"
            );
        }
    }
}

fn shared_i8(v: &[i8]) -> SharedBytes {
    SharedBytes::from_vec(bytemuck::cast_slice(v).to_vec())
}

/// Per-row compressed-tensors quantization of a random weight matrix with outlier rows.
fn int8_weights(rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut r = rng(3);
    let mut q = vec![0i8; rows * cols];
    let mut s = vec![0f32; rows];
    for i in 0..rows {
        let mag = if i % 5 == 0 { 30.0 } else { 0.05 };
        let w: Vec<f32> = (0..cols).map(|_| r.random_range(-mag..mag)).collect();
        s[i] = quant::int8::quantize_row(
            &w,
            quant::hf::compressed_tensors::ScaleDtype::BF16,
            &mut q[i * cols..(i + 1) * cols],
        );
    }
    (q, s)
}

#[test]
fn w8a8_matmul_equals_the_reference_formula_at_every_level() {
    for (rows, cols) in [(3, 33), (64, 576), (257, 1536)] {
        let (q, s) = int8_weights(rows, cols);
        let xs: Vec<f32> = token_rows(cols).into_iter().flatten().collect();
        let n_tok = xs.len() / cols;
        // Reference: quant's token quantizer, exact integer sums, vLLM's epilogue in f32.
        let mut want = vec![0f32; n_tok * rows];
        for t in 0..n_tok {
            let mut qx = vec![0i8; cols];
            let sx = quant::int8::quantize_token_dynamic(&xs[t * cols..(t + 1) * cols], &mut qx);
            for r in 0..rows {
                let acc: i64 = (0..cols)
                    .map(|c| q[r * cols + c] as i64 * qx[c] as i64)
                    .sum();
                want[t * rows + r] = acc as i32 as f32 * s[r] * sx;
            }
        }
        for isa in Isa::available() {
            let m = Int8Matrix::new(
                shared_i8(&q),
                rows,
                cols,
                s.clone(),
                Int8Activations::DynamicPerToken,
            )
            .unwrap()
            .with_isa(isa)
            .unwrap();
            let mut y = vec![0f32; n_tok * rows];
            m.matmul(&xs, n_tok, &mut y);
            let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{isa:?} {rows}x{cols}: W8A8 differs from the reference"
            );
        }
    }
}

#[test]
fn w8a16_matmul_matches_float64() {
    let (rows, cols) = (70, 576);
    let (q, s) = int8_weights(rows, cols);
    let xs: Vec<f32> = token_rows(cols).into_iter().take(8).flatten().collect();
    let n_tok = xs.len() / cols;
    let m = Int8Matrix::new(
        shared_i8(&q),
        rows,
        cols,
        s.clone(),
        Int8Activations::Unquantized,
    )
    .unwrap();
    let mut y = vec![0f32; n_tok * rows];
    m.matmul(&xs, n_tok, &mut y);
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        m.dequantize_row(r, &mut row);
        for t in 0..n_tok {
            let x = &xs[t * cols..(t + 1) * cols];
            let want: f64 = (0..cols)
                .map(|c| q[r * cols + c] as f64 * s[r] as f64 * x[c] as f64)
                .sum();
            let mag: f64 = (0..cols).map(|c| (row[c] as f64 * x[c] as f64).abs()).sum();
            let got = y[t * rows + r] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * mag.max(1e-30),
                "r={r} t={t}: {got} vs {want}"
            );
        }
    }
}

/// Random E4M3 weight codes (no NaN), with some rows of constants and zeros.
fn fp8_codes(rows: usize, cols: usize) -> Vec<u8> {
    let mut r = rng(4);
    (0..rows * cols)
        .map(|i| match (i / cols) % 7 {
            0 => 0x00,
            1 => 0x38,
            _ => loop {
                let b: u8 = r.random();
                if b & 0x7F != 0x7F {
                    break b;
                }
            },
        })
        .collect()
}

/// The float64 product vLLM defines: quant's reference activation quantizer, exact sums of
/// E4M3 products per stretch of shared scales (`stretch`: the weight scale's width), times the
/// weight and activation scales.
#[allow(clippy::too_many_arguments)]
fn fp8_reference(
    codes: &[u8],
    rows: usize,
    cols: usize,
    stretch: usize,
    w_scale: &dyn Fn(usize, usize) -> f64,
    act: Fp8Activations,
    x: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let n_tok = x.len() / cols;
    let (mut want, mut mag) = (vec![0f64; n_tok * rows], vec![0f64; n_tok * rows]);
    for t in 0..n_tok {
        let xt = &x[t * cols..(t + 1) * cols];
        let mut q = vec![0u8; cols];
        let (group, scales): (usize, Vec<f32>) = match act {
            Fp8Activations::DynamicPerToken => (cols, vec![quantize_token_dynamic(xt, &mut q)]),
            Fp8Activations::Static(s) => {
                quantize_static(xt, s, &mut q);
                (cols, vec![s])
            }
            Fp8Activations::DynamicGroup(g) => {
                let mut s = vec![0f32; cols.div_ceil(g)];
                quantize_token_groups(xt, g, &mut q, &mut s);
                (g, s)
            }
            Fp8Activations::Unquantized => unreachable!(),
        };
        // Scales multiply each stretch's exact sum (as vLLM's epilogue does), never the terms.
        let seg = group.min(stretch);
        for r in 0..rows {
            for c0 in (0..cols).step_by(seg) {
                let (mut acc, mut acc_abs) = (0f64, 0f64);
                for c in c0..(c0 + seg).min(cols) {
                    let p = e4m3_to_f32(codes[r * cols + c]) as f64 * e4m3_to_f32(q[c]) as f64;
                    acc += p;
                    acc_abs += p.abs();
                }
                let scale = w_scale(r, c0) * scales[c0 / group] as f64;
                want[t * rows + r] += acc * scale;
                mag[t * rows + r] += acc_abs * scale.abs();
            }
        }
    }
    (want, mag)
}

fn check_fp8(
    m: &Fp8Matrix,
    codes: &[u8],
    stretch: usize,
    w_scale: &dyn Fn(usize, usize) -> f64,
    x: &[f32],
) {
    let (rows, cols) = (m.rows(), m.cols());
    let n_tok = x.len() / cols;
    let (want, mag) = fp8_reference(codes, rows, cols, stretch, w_scale, m.activations(), x);
    let mut y = vec![0f32; n_tok * rows];
    m.matmul(x, n_tok, &mut y);
    for i in 0..y.len() {
        // An infinite activation makes an infinite scale: vLLM's output is then not finite
        // either (∞ or NaN, depending on where the scale enters), and neither may ours be.
        if !want[i].is_finite() {
            assert!(!y[i].is_finite(), "output {i}: {} vs {}", y[i], want[i]);
            continue;
        }
        let err = (y[i] as f64 - want[i]).abs();
        assert!(
            err <= 2e-6 * mag[i] + 1e-30,
            "{}: output {i}: {} vs {} (Σ|p| {})",
            m.format(),
            y[i],
            want[i],
            mag[i]
        );
    }
    let mut row = vec![0f32; cols];
    m.dequantize_row(rows - 1, &mut row);
    for c in 0..cols {
        let w = e4m3_to_f32(codes[(rows - 1) * cols + c]) * w_scale(rows - 1, c) as f32;
        assert_eq!(row[c], w, "dequantized column {c}");
    }
}

#[test]
fn fp8_per_channel_dynamic_matches_float64() {
    let (rows, cols) = (50, 576);
    let codes = fp8_codes(rows, cols);
    let s: Vec<f32> = (0..rows).map(|r| 1e-3 * (1 + r % 9) as f32).collect();
    let x: Vec<f32> = token_rows(cols).into_iter().flatten().collect();
    let m = Fp8Matrix::new(
        SharedBytes::from_vec(codes.clone()),
        rows,
        cols,
        Fp8WeightScale::Channel(s.clone()),
        Fp8Activations::DynamicPerToken,
    )
    .unwrap();
    check_fp8(&m, &codes, cols, &|r, _| s[r] as f64, &x);
    assert_eq!(m.clipped_activations(), None);
}

#[test]
fn fp8_static_saturates_and_counts_values_beyond_the_scale() {
    let (rows, cols) = (20, 64);
    let codes = fp8_codes(rows, cols);
    // Calibrated for |x| ≤ 1: the 3e4-scale row and the outliers go beyond ±448·s.
    let input_scale = 1.0 / 448.0;
    let x: Vec<f32> = token_rows(cols).into_iter().flatten().collect();
    let m = Fp8Matrix::new(
        SharedBytes::from_vec(codes.clone()),
        rows,
        cols,
        Fp8WeightScale::Tensor(0.02),
        Fp8Activations::Static(input_scale),
    )
    .unwrap();
    check_fp8(&m, &codes, cols, &|_, _| 0.02, &x);
    let inv = 1.0 / input_scale;
    let beyond = x
        .iter()
        .filter(|v| v.is_nan() || (**v * inv).abs() > 448.0)
        .count() as u64;
    let c = m.clipped_activations().unwrap();
    assert_eq!((c.clipped, c.seen), (beyond, x.len() as u64));
    assert!(c.clipped > 0);
    let mut y = vec![0f32; x.len() / cols * rows];
    m.matmul(&x, x.len() / cols, &mut y);
    assert!(y.iter().all(|v| v.is_finite()), "saturated, not garbage");
    assert_eq!(m.clipped_activations().unwrap().clipped, 2 * beyond);
}

#[test]
fn fp8_blocks_with_token_groups_match_float64() {
    // 576 columns: four full 128-blocks and a 64-wide last one, as on SmolLM2.
    let (rows, cols) = (200, 576);
    let codes = fp8_codes(rows, cols);
    let nb = cols.div_ceil(128);
    let scales: Vec<f32> = (0..rows.div_ceil(128) * nb)
        .map(|i| 1e-3 * (i + 1) as f32)
        .collect();
    let x: Vec<f32> = token_rows(cols).into_iter().flatten().collect();
    let ws = |r: usize, c: usize| scales[(r / 128) * nb + c / 128] as f64;
    let block = Fp8WeightScale::Block {
        rows: 128,
        cols: 128,
        scales: scales.clone(),
    };
    let m = Fp8Matrix::new(
        SharedBytes::from_vec(codes.clone()),
        rows,
        cols,
        block.clone(),
        Fp8Activations::DynamicGroup(128),
    )
    .unwrap();
    check_fp8(&m, &codes, 128, &ws, &x);
    // Block weights with whole-token activation scales use the block stretches alone.
    let m = Fp8Matrix::new(
        SharedBytes::from_vec(codes.clone()),
        rows,
        cols,
        block,
        Fp8Activations::DynamicPerToken,
    )
    .unwrap();
    check_fp8(&m, &codes, 128, &ws, &x);
}

#[test]
fn construction_refuses_bad_weights_and_scales() {
    let mut codes = vec![0x38u8; 8];
    codes[5] = 0xFF;
    let e = Fp8Matrix::new(
        SharedBytes::from_vec(codes),
        2,
        4,
        Fp8WeightScale::Tensor(1.0),
        Fp8Activations::DynamicPerToken,
    );
    assert!(matches!(
        e,
        Err(ScaledMatrixError::NanWeight {
            index: 5,
            row: 1,
            code: 0xFF
        })
    ));
    let e = Fp8Matrix::new(
        SharedBytes::from_vec(vec![0; 8]),
        2,
        4,
        Fp8WeightScale::Channel(vec![1.0, f32::NAN]),
        Fp8Activations::DynamicPerToken,
    );
    assert!(matches!(
        e,
        Err(ScaledMatrixError::BadScale { index: 1, .. })
    ));
    let e = Fp8Matrix::new(
        SharedBytes::from_vec(vec![0; 8]),
        2,
        4,
        Fp8WeightScale::Tensor(1.0),
        Fp8Activations::Static(0.0),
    );
    assert!(matches!(e, Err(ScaledMatrixError::BadScale { .. })));
    let e = Fp8Matrix::new(
        SharedBytes::from_vec(vec![0; 7]),
        2,
        4,
        Fp8WeightScale::Tensor(1.0),
        Fp8Activations::DynamicPerToken,
    );
    assert!(matches!(e, Err(ScaledMatrixError::Size { .. })));
    let e = Fp8Matrix::new(
        SharedBytes::from_vec(vec![0; 8]),
        2,
        4,
        Fp8WeightScale::Tensor(1.0),
        Fp8Activations::DynamicGroup(0),
    );
    assert!(matches!(e, Err(ScaledMatrixError::Unsupported(_))));
    let e = Int8Matrix::new(
        shared_i8(&[0; 8]),
        2,
        4,
        vec![1.0],
        Int8Activations::DynamicPerToken,
    );
    assert!(matches!(e, Err(ScaledMatrixError::Size { .. })));
    let e = Int8Matrix::new(
        shared_i8(&[0; 8]),
        2,
        4,
        vec![1.0, -1.0],
        Int8Activations::DynamicPerToken,
    );
    assert!(matches!(
        e,
        Err(ScaledMatrixError::BadScale { index: 1, .. })
    ));
}
