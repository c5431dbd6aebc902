//! The calibration pipeline's products on SmolLM2-135M's shapes, one 512-token sample at a
//! time as the pipeline runs them: the f32 panel GEMM against the bf16 products (AMX where the
//! CPU has it), the Gram matrix XᵀX, and the runtime's f32 causal attention against the bf16
//! one, in the same run. Prints GFLOP/s (attention: the causal half of QKᵀ and PV).
//!
//! `cargo bench -p kernels --bench calib_gemm` (QUANTIZE_AMX=0 shows the bf16 fallback).

use std::time::Instant;

use kernels::attention::{causal_attention, AttnShape, KeyBlocks};
use kernels::attention_bf16::causal_self_attention;
use kernels::cpu::features;
use kernels::{DenseBf16Matrix, DenseF32Matrix, Matrix};

const SHAPES: [(usize, usize, &str); 4] = [
    (576, 576, "attn_q/o"),
    (192, 576, "attn_k/v"),
    (1536, 576, "ffn_gate/up"),
    (576, 1536, "ffn_down"),
];
const TOKENS: usize = 512;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

/// Best seconds per call over `reps` calls.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    println!(
        "cpu: {}, threads {}",
        features().summary(),
        rayon::current_num_threads()
    );
    println!("| shape | f32 GEMM GFLOP/s | bf16 GEMM GFLOP/s | Gram GFLOP/s (lower half) |");
    println!("|---|---|---|---|");
    for (rows, cols, name) in SHAPES {
        let w = values(rows * cols, 3);
        let x = values(TOKENS * cols, 5);
        let mut y = vec![0f32; TOKENS * rows];
        let flop = 2.0 * (rows * cols * TOKENS) as f64;
        let f = DenseF32Matrix::new(&w, rows, cols);
        let tf = best(20, || f.matmul(&x, TOKENS, &mut y));
        let b = DenseBf16Matrix::new(&w, rows, cols);
        let tb = best(20, || b.matmul(&x, TOKENS, &mut y));
        let mut g = vec![0f32; cols * cols];
        let tg = best(20, || kernels::gram::add_gram(&x, TOKENS, cols, &mut g));
        let gflop = (cols * cols * TOKENS) as f64;
        println!(
            "| {name} {rows}×{cols} | {:.0} | {:.0} | {:.0} |",
            flop / tf / 1e9,
            flop / tb / 1e9,
            gflop / tg / 1e9
        );
    }
    let s = AttnShape {
        n_head: 9,
        n_kv_head: 3,
        head_dim: 64,
    };
    let (qw, kw) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    let (q, k, v) = (
        values(TOKENS * qw, 7),
        values(TOKENS * kw, 9),
        values(TOKENS * kw, 11),
    );
    let mut out = vec![0f32; TOKENS * qw];
    let flop = 2.0 * (TOKENS * TOKENS * qw) as f64;
    let mut keys = KeyBlocks::new(kw);
    keys.append(&k);
    let tf = best(20, || {
        causal_attention(s, &q, TOKENS, 0, &keys, &v, &mut out)
    });
    let tb = best(20, || {
        causal_self_attention(s, &q, &k, &v, TOKENS, &mut out)
    });
    println!(
        "| attention 9 heads (3 KV) × 64, {TOKENS} tokens | {:.0} | {:.0} | |",
        flop / tf / 1e9,
        flop / tb / 1e9
    );
}
