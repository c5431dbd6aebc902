//! Every weight type's dot kernel at every instruction-set level this CPU runs, against the
//! float64 dot of quant's reference dequantization of both operands.

mod common;

use common::*;
use kernels::cpu::q8::{ActFormat, QuantizedRows};
use kernels::cpu::vec_dot::{DotKernel, MAX_NT};
use kernels::cpu::Isa;
use quant::ggml::GgmlType;

/// Row lengths: one block, a few blocks, many blocks (and for floats, lengths off the vector step).
fn lengths(ty: GgmlType) -> Vec<usize> {
    let b = ty.block_size();
    if ty.is_quantized() {
        vec![b, 3 * b, if b == 32 { 48 * b } else { 12 * b }]
    } else {
        vec![1, 7, 32, 576, 1000, 1536]
    }
}

/// (weight row, description) cases for one type and length.
fn weight_cases(ty: GgmlType, cols: usize, seed: u64) -> Vec<(Vec<u8>, String)> {
    let mut rng = rng(seed);
    let mut cases = vec![
        (random_row(ty, cols, &mut rng, false), "random".to_string()),
        (
            random_row(ty, cols, &mut rng, true),
            "random, negative scales".into(),
        ),
        (pattern_row(ty, cols, 0, 0.0), "all zero".into()),
    ];
    for fill in [0x00, 0xFF, 0x80, 0x7F, 0x88, 0x5A] {
        for d in [0.0625, -0.5] {
            cases.push((
                pattern_row(ty, cols, fill, d),
                format!("fill {fill:#04x}, d {d}"),
            ));
        }
    }
    cases
}

fn check_dot(kernel: &DotKernel, w: &[u8], x: &[f32], what: &str) -> f32 {
    let (ty, fmt, cols) = (kernel.weight_type(), kernel.act_format(), x.len());
    let acts = QuantizedRows::new(kernel.isa(), fmt, x, cols);
    let got = kernel.dot(w, acts.row(0));
    let (exact, tol) = oracle(ty, w, fmt, acts.row(0), cols);
    assert!(
        (got as f64 - exact).abs() <= tol,
        "{ty} {:?} n={cols} {what}: got {got}, exact {exact}, tolerance {tol}",
        kernel.isa()
    );
    got
}

#[test]
fn every_kernel_matches_the_float64_oracle() {
    let isas = Isa::available();
    assert!(isas.contains(&Isa::Scalar));
    eprintln!("levels tested: {isas:?}");
    for ty in WEIGHT_TYPES {
        for (li, cols) in lengths(ty).into_iter().enumerate() {
            for (wi, (w, what)) in weight_cases(ty, cols, 100 * li as u64 + ty.id() as u64)
                .iter()
                .enumerate()
            {
                let mut r = rng(wi as u64);
                for kind in 0..6 {
                    let x = act_row(kind, cols, &mut r);
                    for isa in &isas {
                        let k = DotKernel::new(ty, *isa).unwrap();
                        check_dot(&k, w, &x, &format!("{what}, activations {kind}"));
                    }
                }
            }
        }
    }
}

#[test]
fn simd_levels_agree_with_scalar() {
    for ty in WEIGHT_TYPES {
        let scalar = DotKernel::new(ty, Isa::Scalar).unwrap();
        let fmt = scalar.act_format();
        for cols in lengths(ty) {
            let mut r = rng(cols as u64 + 17 * ty.id() as u64);
            for trial in 0..8 {
                let w = random_row(ty, cols, &mut r, trial % 2 == 1);
                let x = act_row(0, cols, &mut r);
                // The same activation bytes for every level (quantizers are tested separately).
                let acts = QuantizedRows::new(Isa::Scalar, fmt, &x, cols);
                let want = scalar.dot(&w, acts.row(0));
                let (_, tol) = oracle(ty, &w, fmt, acts.row(0), cols);
                for isa in Isa::available() {
                    let got = DotKernel::new(ty, isa).unwrap().dot(&w, acts.row(0));
                    assert!(
                        (got - want).abs() as f64 <= 2.0 * tol,
                        "{ty} {isa:?} n={cols}: {got} vs scalar {want}"
                    );
                }
            }
        }
    }
}

/// A tile of nt rows gives, for each row, exactly what the one-row call gives.
#[test]
fn tiles_equal_single_row_calls() {
    for ty in WEIGHT_TYPES {
        let cols = 2 * ty.block_size().max(16);
        let mut r = rng(ty.id() as u64 + 5);
        let w = random_row(ty, cols, &mut r, true);
        for isa in Isa::available() {
            let k = DotKernel::new(ty, isa).unwrap();
            let x: Vec<f32> = (0..MAX_NT).flat_map(|t| act_row(t, cols, &mut r)).collect();
            let acts = QuantizedRows::new(isa, k.act_format(), &x, cols);
            for nt in 1..=MAX_NT {
                let tile = k.dot_tile(&w, acts.bytes(), acts.row_bytes(), nt);
                for (t, v) in tile.iter().enumerate().take(nt) {
                    let one = k.dot(&w, acts.row(t));
                    assert_eq!(v.to_bits(), one.to_bits(), "{ty} {isa:?} nt={nt} t={t}");
                }
            }
        }
    }
}

#[test]
fn activation_formats_follow_ggml_pairing() {
    use GgmlType::*;
    for (ty, fmt) in [
        (Q4_0, ActFormat::Q8_0),
        (Q4_1, ActFormat::Q8_1),
        (Q5_0, ActFormat::Q8_0),
        (Q5_1, ActFormat::Q8_1),
        (Q8_0, ActFormat::Q8_0),
        (IQ4NL, ActFormat::Q8_0),
        (Q2K, ActFormat::Q8K),
        (Q6K, ActFormat::Q8K),
        (IQ4XS, ActFormat::Q8K),
        (F16, ActFormat::F32),
    ] {
        assert_eq!(DotKernel::best(ty).unwrap().act_format(), fmt, "{ty}");
    }
    assert!(DotKernel::best(Q8K).is_none() && DotKernel::best(Q8_1).is_none());
}

#[test]
#[should_panic(expected = "whole blocks")]
fn rejects_partial_weight_blocks() {
    let k = DotKernel::best(GgmlType::Q4_0).unwrap();
    k.dot(&[0u8; 17], &[0u8; 34]);
}
