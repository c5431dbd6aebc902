//! GroupQuantMatrix (GPTQ/AWQ/W4A16 weights × f32 activations) against the float64 product of
//! quant's reference dequantization, at every instruction-set level this CPU runs, on random
//! and edge-case weights (act-order permutations, zero and extreme zero points, outlier scales,
//! constant rows) and activations (zeros, outliers, NaN/Inf propagation).

use half::f16;
use kernels::cpu::Isa;
use kernels::{GroupQuantMatrix, Matrix};
use quant::groupq::GroupQuant;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_quant(rng: &mut StdRng, rows: usize, cols: usize, bits: u32, g: usize) -> GroupQuant {
    let maxq = (1u32 << bits) - 1;
    let ng = cols / g;
    GroupQuant {
        rows,
        cols,
        bits,
        group_size: g,
        codes: (0..rows * cols)
            .map(|_| rng.random_range(0..=maxq) as u8)
            .collect(),
        scales: (0..ng * rows)
            .map(|_| f16::from_f32(rng.random_range(1e-4f32..0.05)).to_f32())
            .collect(),
        zeros: (0..ng * rows)
            .map(|_| rng.random_range(0..=maxq + (bits < 8) as u32) as u8)
            .collect(),
        g_idx: None,
    }
}

/// A g_idx as GPTQ's act-order produces: a permutation of columns, g per group.
fn act_order(rng: &mut StdRng, cols: usize, g: usize) -> Vec<u32> {
    let mut perm: Vec<usize> = (0..cols).collect();
    for i in (1..cols).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    let mut g_idx = vec![0u32; cols];
    for (i, c) in perm.iter().enumerate() {
        g_idx[*c] = (i / g) as u32;
    }
    g_idx
}

fn reference(q: &GroupQuant, x: &[f32], n_tok: usize) -> (Vec<f64>, Vec<f64>) {
    let w = q.dequantize();
    let (rows, cols) = (q.rows, q.cols);
    let mut y = vec![0f64; n_tok * rows];
    let mut mag = vec![0f64; n_tok * rows];
    for t in 0..n_tok {
        for r in 0..rows {
            for c in 0..cols {
                let p = w[r * cols + c] as f64 * x[t * cols + c] as f64;
                y[t * rows + r] += p;
                mag[t * rows + r] += p.abs();
            }
        }
    }
    (y, mag)
}

fn check(q: &GroupQuant, x: &[f32], n_tok: usize, what: &str) {
    let (want, mag) = reference(q, x, n_tok);
    for isa in Isa::available() {
        let m = GroupQuantMatrix::with_isa(q, isa).unwrap();
        assert_eq!(m.isa(), isa, "{what}: kernel level");
        let mut y = vec![0f32; n_tok * q.rows];
        m.matmul(x, n_tok, &mut y);
        for (i, (g, w)) in y.iter().zip(&want).enumerate() {
            let tol = 2e-6 * mag[i] + 1e-30;
            assert!(
                (*g as f64 - w).abs() <= tol,
                "{what} {isa:?}: output {i}: {g} vs {w} (tolerance {tol})"
            );
        }
        let mut row = vec![0f32; q.cols];
        let deq = q.dequantize();
        for r in [0, q.rows / 2, q.rows - 1] {
            m.dequantize_row(r, &mut row);
            assert_eq!(row, deq[r * q.cols..(r + 1) * q.cols], "{what}: row {r}");
        }
    }
}

fn activations(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

#[test]
fn random_weights_every_width_and_token_count() {
    let mut rng = StdRng::seed_from_u64(11);
    for (bits, g, rows, cols) in [
        (4, 32, 8, 64),
        (4, 64, 37, 576),
        (4, 128, 16, 1536),
        (3, 64, 19, 192),
        (2, 32, 5, 96),
        (8, 128, 9, 256),
        (4, 576, 3, 576),
    ] {
        let q = random_quant(&mut rng, rows, cols, bits, g);
        for n_tok in [1, 2, 3, 4, 5, 9] {
            let x = activations(&mut rng, n_tok * cols);
            check(
                &q,
                &x,
                n_tok,
                &format!("{bits}-bit g{g} {rows}x{cols} n_tok {n_tok}"),
            );
        }
    }
}

#[test]
fn act_order_permutation_is_applied_to_the_activations() {
    let mut rng = StdRng::seed_from_u64(12);
    for (bits, g) in [(4, 32), (4, 64), (8, 64), (3, 32)] {
        let mut q = random_quant(&mut rng, 24, 256, bits, g);
        q.g_idx = Some(act_order(&mut rng, 256, g));
        let x = activations(&mut rng, 6 * 256);
        check(&q, &x, 6, &format!("act-order {bits}-bit g{g}"));
    }
}

#[test]
fn large_products_run_in_parallel_tasks() {
    let mut rng = StdRng::seed_from_u64(13);
    let q = random_quant(&mut rng, 200, 512, 4, 128);
    let x = activations(&mut rng, 70 * 512);
    check(&q, &x, 70, "200x512, 70 tokens");
}

#[test]
fn edge_cases() {
    let mut rng = StdRng::seed_from_u64(14);
    let (rows, cols) = (16, 128);
    // Zero points at both ends, codes at both ends, outlier scales, one constant row.
    let mut q = random_quant(&mut rng, rows, cols, 4, 32);
    for (i, z) in q.zeros.iter_mut().enumerate() {
        *z = [0, 15, 16, 8][i % 4];
    }
    for r in 0..cols {
        q.codes[r] = 15;
        q.codes[cols + r] = 0;
    }
    q.scales[3] = 60000.0;
    q.scales[5] = f16::from_bits(1).to_f32();
    let mut x = activations(&mut rng, 3 * cols);
    x[..cols].fill(0.0);
    x[cols + 7] = 1e4;
    check(&q, &x, 3, "edge cases");

    // Non-finite activations reach the outputs that read them.
    let m = GroupQuantMatrix::new(&q).unwrap();
    let mut x = activations(&mut rng, 2 * cols);
    x[5] = f32::NAN;
    x[cols + 9] = f32::INFINITY;
    let mut y = vec![0f32; 2 * rows];
    m.matmul(&x, 2, &mut y);
    assert!(y[..rows].iter().all(|v| v.is_nan()));
    assert!(y[rows..].iter().all(|v| !v.is_finite()));
}

#[test]
fn rejects_what_the_kernels_cannot_hold() {
    let mut rng = StdRng::seed_from_u64(15);
    let q = random_quant(&mut rng, 4, 96, 4, 48);
    assert!(GroupQuantMatrix::new(&q).is_err());
    let mut q = random_quant(&mut rng, 4, 128, 4, 32);
    let mut g: Vec<u32> = (0..128).map(|c| (c / 32) as u32).collect();
    g[0] = 1;
    q.g_idx = Some(g);
    assert!(GroupQuantMatrix::new(&q).is_err());
    q.g_idx = None;
    q.codes[0] = 16;
    assert!(GroupQuantMatrix::new(&q).is_err());
}
