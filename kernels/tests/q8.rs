//! The activation quantizers at every level against quant's reference quantizers (ggml's
//! quantize_row_q8_0_ref, _q8_1_ref, _q8_K_ref): the bytes must be identical.

mod common;

use bytemuck::Zeroable;
use common::rng;
use kernels::cpu::q8::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
use kernels::cpu::Isa;
use quant::ggml::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use rand::Rng;

/// quant's reference activation quantizers (transliterations of ggml's `_ref` functions, checked
/// against llama.cpp's own bytes in quant's tests), as vectors of blocks.
fn reference<B: bytemuck::Pod + Zeroable>(
    x: &[f32],
    block: usize,
    f: fn(&[f32], &mut [B]) -> Result<(), quant::ggml::CodecError>,
) -> Vec<B> {
    let mut out = vec![B::zeroed(); x.len() / block];
    f(x, &mut out).unwrap();
    out
}

fn ref_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    reference(x, 32, quant::ggml::quantize::quantize_row_q8_0)
}

fn ref_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    reference(x, 32, quant::ggml::quantize::quantize_row_q8_1)
}

fn ref_q8_k(x: &[f32]) -> Vec<BlockQ8K> {
    reference(x, 256, quant::ggml::quantize::quantize_row_q8_k)
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
