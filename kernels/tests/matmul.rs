//! GgmlMatrix::matmul at every level against a float64 matmul of the dequantized weights with the
//! unquantized activations, over token counts that hit every tile remainder.

mod common;

use common::*;
use kernels::cpu::q8::{ActFormat, QuantizedRows};
use kernels::cpu::Isa;
use kernels::{GgmlMatrix, Matrix};
use quant::bytes::SharedBytes;
use quant::ggml::GgmlType;

/// A random [rows × cols] matrix of type `ty`, stored one byte off alignment so the kernels'
/// unaligned reads are exercised.
fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> GgmlMatrix {
    let mut r = rng(seed);
    let mut bytes = vec![0u8];
    for _ in 0..rows {
        bytes.extend(random_row(ty, cols, &mut r, true));
    }
    let n = bytes.len();
    let data = SharedBytes::from_vec(bytes).slice(1..n);
    GgmlMatrix::new(ty, data, rows, cols).unwrap()
}

fn cols_for(ty: GgmlType) -> usize {
    if ty.block_size() == 256 {
        512
    } else {
        96
    }
}

#[test]
fn matmul_matches_float64_for_every_type_level_and_token_count() {
    let rows = 37; // not a multiple of any tile size
    for ty in WEIGHT_TYPES {
        let cols = cols_for(ty);
        let m0 = matrix(ty, rows, cols, ty.id() as u64);
        let w: Vec<Vec<f64>> = (0..rows)
            .map(|r| dequant(ty, m0.row_bytes_of(r), cols))
            .collect();
        for isa in Isa::available() {
            let m = matrix(ty, rows, cols, ty.id() as u64)
                .with_isa(isa)
                .unwrap();
            let fmt = m.kernel().act_format();
            for n_tok in 1..=17 {
                let mut r = rng(n_tok as u64);
                let x: Vec<f32> = (0..n_tok).flat_map(|t| act_row(t, cols, &mut r)).collect();
                let mut y = vec![f32::NAN; n_tok * rows];
                m.matmul(&x, n_tok, &mut y);
                // The activations as the kernels see them bound the quantization error exactly:
                // |Σ w·x − Σ w·x̂| ≤ Σ |w|·|x − x̂|.
                let q = QuantizedRows::new(isa, fmt, &x, cols);
                for t in 0..n_tok {
                    let xt = &x[t * cols..(t + 1) * cols];
                    let xq = dequant_acts(fmt, q.row(t), cols);
                    check_quantization_error(fmt, xt, &xq);
                    for (ri, wr) in w.iter().enumerate() {
                        let exact: f64 = wr.iter().zip(xt).map(|(a, b)| a * *b as f64).sum();
                        let act_err: f64 = wr
                            .iter()
                            .zip(xt.iter().zip(&xq))
                            .map(|(a, (x, xq))| a.abs() * (*x as f64 - xq).abs())
                            .sum();
                        let (_, float_tol) = oracle(ty, m.row_bytes_of(ri), fmt, q.row(t), cols);
                        let got = y[t * rows + ri] as f64;
                        assert!(
                            (got - exact).abs() <= act_err + float_tol,
                            "{ty} {isa:?} n_tok={n_tok} t={t} r={ri}: {got} vs {exact} \
                             (allowed {act_err} + {float_tol})"
                        );
                    }
                }
            }
        }
    }
}

/// Blocks of extreme and constant quants (every non-scale byte 0x00, 0xFF, 0x80, 0x7F or 0x88:
/// the largest unsigned weight bytes against the largest activations), negative scales, and rows
/// that leave the last group of sixteen partly empty, at every level.
#[test]
fn matmul_of_edge_case_blocks_matches_float64() {
    for ty in WEIGHT_TYPES.into_iter().filter(|t| t.is_quantized()) {
        let cols = cols_for(ty);
        let fills = [0x00u8, 0xFF, 0x80, 0x7F, 0x88];
        let rows = 2 * fills.len() + 7;
        let mut bytes = Vec::new();
        for r in 0..rows {
            let d = if r % 2 == 0 { 0.02 } else { -0.5 };
            bytes.extend(pattern_row(ty, cols, fills[r % fills.len()], d));
        }
        let m0 = GgmlMatrix::new(ty, SharedBytes::from_vec(bytes.clone()), rows, cols).unwrap();
        for isa in Isa::available() {
            let m = GgmlMatrix::new(ty, SharedBytes::from_vec(bytes.clone()), rows, cols)
                .unwrap()
                .with_isa(isa)
                .unwrap();
            let fmt = m.kernel().act_format();
            let mut r = rng(5);
            let n_tok = 9;
            let x: Vec<f32> = (0..n_tok).flat_map(|t| act_row(t, cols, &mut r)).collect();
            let mut y = vec![f32::NAN; n_tok * rows];
            m.matmul(&x, n_tok, &mut y);
            let q = QuantizedRows::new(isa, fmt, &x, cols);
            for t in 0..n_tok {
                for ri in 0..rows {
                    let (exact, tol) = oracle(ty, m0.row_bytes_of(ri), fmt, q.row(t), cols);
                    let got = y[t * rows + ri] as f64;
                    assert!(
                        (got - exact).abs() <= tol,
                        "{ty} {isa:?} t={t} r={ri}: {got} vs {exact} (allowed {tol})"
                    );
                }
            }
        }
    }
}

/// 8-bit activations are within about half a step of the input: with d = amax/127 per block,
/// |x − x̂| ≤ d/2 plus the f16 rounding of d over up to 127 steps (Q8_0/Q8_1).
fn check_quantization_error(fmt: ActFormat, x: &[f32], xq: &[f64]) {
    if fmt == ActFormat::F32 {
        assert!(x.iter().zip(xq).all(|(a, b)| *a as f64 == *b));
        return;
    }
    for (xb, qb) in x.chunks(fmt.block_size()).zip(xq.chunks(fmt.block_size())) {
        let amax = xb.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let step = amax / 127.0;
        for (a, b) in xb.iter().zip(qb) {
            assert!((*a as f64 - b).abs() <= 0.57 * step + 1e-30, "{a} -> {b}");
        }
    }
}

/// Token t of a batch gives bit for bit what a batch of that token alone gives: the tiling only
/// reorders work.
#[test]
fn batched_tokens_equal_single_token_calls() {
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4K, GgmlType::F16] {
        let cols = 512;
        for isa in Isa::available() {
            // Enough weight bytes × tokens to be split into several row and token blocks.
            let rows = 1000;
            let m = matrix(ty, rows, cols, 9).with_isa(isa).unwrap();
            let n_tok = 70;
            let mut r = rng(3);
            let x: Vec<f32> = (0..n_tok).flat_map(|t| act_row(t, cols, &mut r)).collect();
            let mut y = vec![0f32; n_tok * rows];
            m.matmul(&x, n_tok, &mut y);
            for t in [0, 3, 4, 63, 64, 69] {
                let mut y1 = vec![0f32; rows];
                m.matmul(&x[t * cols..(t + 1) * cols], 1, &mut y1);
                assert_eq!(&y[t * rows..(t + 1) * rows], &y1[..], "{ty} {isa:?} t={t}");
            }
        }
    }
}

#[test]
fn zero_tokens_is_a_no_op() {
    let m = matrix(GgmlType::Q8_0, 4, 64, 1);
    m.matmul(&[], 0, &mut []);
}
