//! What the matrices stored as 8-bit codes with float scales (int8, FP8) share: their
//! construction errors, the split of a matmul into parallel blocks of weight rows × tokens, and
//! a per-thread buffer for one decoded weight row.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::vec_dot::{DotKernel, MAX_NT};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScaledMatrixError {
    #[error("{what}: {want} elements expected for [{rows} x {cols}], got {got}")]
    Size {
        what: &'static str,
        rows: usize,
        cols: usize,
        want: usize,
        got: usize,
    },
    #[error("{what} {index} is {value}, not a finite positive scale")]
    BadScale {
        what: &'static str,
        index: usize,
        value: f32,
    },
    #[error("weight element {index} (row {row}) is the FP8 NaN code {code:#04x}")]
    NanWeight { index: usize, row: usize, code: u8 },
    #[error("{0}")]
    Unsupported(String),
}

/// Checks every scale is finite and positive (what the dequantizing formats store).
pub(crate) fn check_scales(what: &'static str, scales: &[f32]) -> Result<(), ScaledMatrixError> {
    match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        None => Ok(()),
        Some(index) => Err(ScaledMatrixError::BadScale {
            what,
            index,
            value: scales[index],
        }),
    }
}

/// Below this much weight traffic (bytes × tokens) one thread does the whole product: waking
/// the pool costs about as much (the same threshold the ggml matrices use).
const SERIAL_WORK: usize = 256 << 10;
/// Weight bytes per task: about half of an L1 data cache, reused by every token of the task.
const TASK_WEIGHT_BYTES: usize = 16 << 10;
/// Tokens per task (and at most per call of the block function).
pub(crate) const TASK_TOKENS: usize = 64;

/// Runs `f(rows, tokens)` over blocks that cover [0, rows) × [0, n_tok) exactly once, in
/// parallel when the product is large; no block has more than [`TASK_TOKENS`] tokens.
/// `row_bytes` is one weight row's storage.
pub(crate) fn for_each_block(
    rows: usize,
    n_tok: usize,
    row_bytes: usize,
    f: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    if rows * row_bytes * n_tok <= SERIAL_WORK {
        for t0 in (0..n_tok).step_by(TASK_TOKENS) {
            f(0..rows, t0..(t0 + TASK_TOKENS).min(n_tok));
        }
        return;
    }
    let cache_rows = (TASK_WEIGHT_BYTES / row_bytes.max(1)).max(1);
    // A single token block re-reads nothing: size tasks only to balance the threads.
    let rows_per_task = if n_tok <= TASK_TOKENS {
        cache_rows.max(rows.div_ceil(8 * rayon::current_num_threads()))
    } else {
        cache_rows
    }
    .min(rows);
    let row_blocks = rows.div_ceil(rows_per_task);
    let tasks = row_blocks * n_tok.div_ceil(TASK_TOKENS);
    (0..tasks).into_par_iter().for_each(|i| {
        let (tb, rb) = (i / row_blocks, i % row_blocks);
        let r0 = rb * rows_per_task;
        let t0 = tb * TASK_TOKENS;
        f(
            r0..(r0 + rows_per_task).min(rows),
            t0..(t0 + TASK_TOKENS).min(n_tok),
        )
    });
}

/// Runs `f` over `n` items (token rows being quantized), in parallel when there are many.
pub(crate) fn for_each_token<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    if items.len() >= 8 {
        items.into_par_iter().for_each(f);
    } else {
        items.into_iter().for_each(f);
    }
}

thread_local! {
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's row buffer resized to `n`.
pub(crate) fn with_row_buffer<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    ROW.with_borrow_mut(|row| {
        row.resize(n, 0.0);
        f(row)
    })
}

/// The f32 dot products of a decoded weight row `w` (columns `cols.start..cols.end` of it)
/// with the same columns of token rows `toks` of `x` (rows of `width` f32 values), through the
/// F32 kernel `k` several tokens at a time; `f(t, dot)` receives each.
pub(crate) fn float_dots(
    k: &DotKernel,
    w: &[f32],
    x: &[f32],
    width: usize,
    cols: Range<usize>,
    toks: Range<usize>,
    mut f: impl FnMut(usize, f32),
) {
    let wb: &[u8] = bytemuck::cast_slice(&w[cols.clone()]);
    let xb: &[u8] = bytemuck::cast_slice(x);
    for t in toks.clone().step_by(MAX_NT) {
        let nt = MAX_NT.min(toks.end - t);
        let v = k.dot_tile(wb, &xb[4 * (t * width + cols.start)..], 4 * width, nt);
        for (j, v) in v.iter().take(nt).enumerate() {
            f(t + j, *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn blocks_cover_every_row_and_token_once() {
        for (rows, n_tok, row_bytes) in [(1, 1, 8), (37, 17, 576), (576, 1, 576), (1536, 300, 576)]
        {
            let seen = Mutex::new(vec![0u8; rows * n_tok]);
            for_each_block(rows, n_tok, row_bytes, |rs, ts| {
                let mut s = seen.lock().unwrap();
                for t in ts {
                    for r in rs.clone() {
                        s[t * rows + r] += 1;
                    }
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|c| *c == 1));
        }
    }

    #[test]
    fn scales_must_be_finite_and_positive() {
        assert!(check_scales("s", &[1.0, 2e-30]).is_ok());
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                check_scales("s", &[1.0, bad]),
                Err(ScaledMatrixError::BadScale { index: 1, .. })
            ));
        }
    }
}
