//! GgmlMatrix::matmul on SmolLM2-135M's shapes, new kernels (8-bit activations, integer dots,
//! tiles) against the previous path (dequantize each row to f32, f32 dot), in the same run.
//!
//! `cargo bench -p kernels --bench matmul` prints two markdown tables: each kernel alone (one
//! thread, data in L1, per instruction-set level), then the matmuls. Filters (comma lists):
//! BENCH_TYPES=Q4_0,F16  BENCH_NTOK=1,512  BENCH_OLD=0 (skip the old path)  BENCH_KERNELS=0.
//! K-quant rows must be whole 256-element blocks, so their 576-wide shapes use 768 columns.

use std::time::{Duration, Instant};

use kernels::cpu::q8::QuantizedRows;
use kernels::cpu::vec_dot::{DotKernel, MAX_NT};
use kernels::cpu::{dot_f32, Isa};
use kernels::{GgmlMatrix, Matrix};
use quant::bytes::SharedBytes;
use quant::ggml::GgmlType;
use rayon::prelude::*;

const SHAPES: [(usize, usize, &str); 5] = [
    (576, 576, "attn_q/o"),
    (192, 576, "attn_k/v"),
    (1536, 576, "ffn_gate/up"),
    (576, 1536, "ffn_down"),
    (49152, 576, "lm_head"),
];

const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q5_0,
    GgmlType::IQ4NL,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::F16,
];

/// Deterministic pseudo-random bytes (xorshift): benchmarks need no statistical quality.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Random quants with small positive f16 scales at every block's scale fields (random bytes
/// there could be NaN or huge); f16 weights are drawn directly as small values.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * ty.row_bytes(cols).unwrap();
    if ty == GgmlType::F16 {
        return bytes(n / 2, 7)
            .into_iter()
            .flat_map(|b| half::f16::from_f32((b as f32 - 128.0) / 512.0).to_le_bytes())
            .collect();
    }
    let mut w = bytes(n, 11);
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let fields: &[usize] = match ty {
        GgmlType::Q4K => &[0, 2],
        GgmlType::Q6K => &[208],
        _ => &[0],
    };
    for block in w.chunks_exact_mut(ty.type_size()) {
        for &at in fields {
            block[at..at + 2].copy_from_slice(&scale);
        }
    }
    w
}

/// The output pointer of the old matmul: tasks write disjoint rows.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each task writes only the elements of its own weight row r.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// The matmul this crate had before the integer kernels, as it was: dequantize each weight row
/// once, then one f32 dot per token.
fn old_matmul(m: &GgmlMatrix, x: &[f32], n_tok: usize, y: &mut [f32]) {
    let (rows, cols) = (m.rows(), m.cols());
    let out = Out(y.as_mut_ptr());
    (0..rows).into_par_iter().with_min_len(8).for_each_init(
        || vec![0f32; cols],
        |buf, r| {
            m.dequantize_row(r, buf);
            for t in 0..n_tok {
                let v = dot_f32(buf, &x[t * cols..(t + 1) * cols]);
                let o = out;
                // SAFETY: t·rows + r < y.len(), and only this task writes row r.
                unsafe { *o.0.add(t * rows + r) = v };
            }
        },
    );
}

/// Fastest seconds per call over enough calls to fill `budget`: the machine is shared, and the
/// minimum is the measurement least disturbed by other processes.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || (start.elapsed() < budget && samples.len() < 200) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.into_iter().fold(f64::INFINITY, f64::min)
}

/// GFLOP/s of one kernel on one thread: 16 weight rows against 1 or MAX_NT token rows, all in
/// L1, so the number is the kernel's compute rate without memory or threading effects.
fn kernel_table(types: &[GgmlType]) {
    println!("| type | level | 1 token GFLOP/s | {MAX_NT} tokens GFLOP/s |");
    println!("|---|---|---|---|");
    for &ty in types {
        let cols = if ty.block_size() == 256 { 768 } else { 576 };
        let rows = 16;
        let row_bytes = ty.row_bytes(cols).unwrap();
        let w = weights(ty, rows, cols);
        let x: Vec<f32> = bytes(MAX_NT * cols, 5)
            .into_iter()
            .map(|b| (b as f32 - 128.0) / 64.0)
            .collect();
        for isa in Isa::available() {
            let k = DotKernel::new(ty, isa).unwrap();
            let acts = QuantizedRows::new(isa, k.act_format(), &x, cols);
            let rate = |nt: usize| {
                let mut sink = 0f32;
                let s = time(Duration::from_millis(100), || {
                    for r in 0..rows {
                        let row = &w[r * row_bytes..(r + 1) * row_bytes];
                        sink += k.dot_tile(row, acts.bytes(), acts.row_bytes(), nt)[0];
                    }
                });
                std::hint::black_box(sink);
                2.0 * (rows * cols * nt) as f64 / s / 1e9
            };
            println!("| {ty} | {isa:?} | {:.1} | {:.1} |", rate(1), rate(MAX_NT));
        }
    }
}

fn list<T>(var: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|s| parse(s.trim())).collect())
}

fn main() {
    let types = list("BENCH_TYPES", GgmlType::from_name).unwrap_or(TYPES.to_vec());
    let ntoks = list("BENCH_NTOK", |s| s.parse().ok()).unwrap_or(vec![1, 512]);
    let old = std::env::var("BENCH_OLD").map_or(true, |v| v != "0");
    println!(
        "CPU: {}; kernels: {:?}; threads: {}",
        kernels::cpu::features().summary(),
        Isa::best(),
        rayon::current_num_threads()
    );
    if std::env::var("BENCH_KERNELS").map_or(true, |v| v != "0") {
        kernel_table(&types);
        println!();
    }
    println!(
        "| type | shape (rows x cols) | n_tok | old ms | new ms | speedup | new GFLOP/s | new weight GB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &ty in &types {
        for &(rows, cols, name) in &SHAPES {
            let cols = if ty.block_size() == 256 && cols % 256 != 0 {
                cols.next_multiple_of(256)
            } else {
                cols
            };
            let m = GgmlMatrix::new(
                ty,
                SharedBytes::from_vec(weights(ty, rows, cols)),
                rows,
                cols,
            )
            .unwrap();
            for &n_tok in &ntoks {
                let x: Vec<f32> = bytes(n_tok * cols, 3)
                    .into_iter()
                    .map(|b| (b as f32 - 128.0) / 64.0)
                    .collect();
                let mut y = vec![0f32; n_tok * rows];
                let budget = Duration::from_millis(400);
                let new = time(budget, || m.matmul(&x, n_tok, &mut y));
                let old_s = old.then(|| time(budget, || old_matmul(&m, &x, n_tok, &mut y)));
                let flops = 2.0 * (rows * cols * n_tok) as f64;
                println!(
                    "| {ty} | {rows}x{cols} {name} | {n_tok} | {} | {:.3} | {} | {:.1} | {:.2} |",
                    old_s.map_or("-".into(), |s| format!("{:.3}", s * 1e3)),
                    new * 1e3,
                    old_s.map_or("-".into(), |s| format!("{:.1}x", s / new)),
                    flops / new / 1e9,
                    m.storage_bytes() as f64 / new / 1e9,
                );
            }
        }
    }
}
