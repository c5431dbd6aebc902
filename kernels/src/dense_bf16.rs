//! Weights for the calibration pipeline's large batches, multiplied as a bf16 model is on an
//! accelerator (and as the peers calibrate on one): weights and inputs rounded to bf16, products
//! summed in f32. With AMX the products run on its tiles, several times the f32 GEMM's rate;
//! elsewhere the same rounded operands go through the f32 panel GEMM. A product of two bf16
//! values is exact in f32, so the two paths differ only in the order of the f32 sums, and a
//! converter gives the same artifact on either up to that rounding.
//!
//! `dequantize_row` returns the weight as given, unrounded: it is what the converters quantize.

use crate::cpu::amx;
use crate::cpu::features::features;
use crate::dense_f32::DenseF32Matrix;
use crate::matrix::{check_matmul_args, Matrix};

/// Tokens (and weight rows) per AMX block.
const BLOCK: usize = 32;

pub struct DenseBf16Matrix {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
    products: Products,
}

enum Products {
    /// AMX panels of the bf16 weight, rows padded to a multiple of 32, cols to `cols_p`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Amx { panels: Vec<u32>, cols_p: usize },
    /// The bf16-rounded weight in f32 panels.
    F32(DenseF32Matrix),
}

impl DenseBf16Matrix {
    /// Takes the row-major [rows × cols] `w`.
    pub fn new(w: &[f32], rows: usize, cols: usize) -> DenseBf16Matrix {
        Self::with_amx(w, rows, cols, features().amx_bf16)
    }

    fn with_amx(w: &[f32], rows: usize, cols: usize, use_amx: bool) -> DenseBf16Matrix {
        assert_eq!(w.len(), rows * cols, "weights are not rows × cols");
        let products = if use_amx {
            let cols_p = cols.next_multiple_of(amx::K);
            let rows_p = rows.next_multiple_of(BLOCK);
            let mut b = vec![0u16; rows_p * cols_p];
            amx::to_padded_bf16(w, rows, cols, rows_p, cols_p, &mut b);
            Products::Amx {
                panels: amx::pack_panels(&b, rows_p, cols_p),
                cols_p,
            }
        } else {
            let mut r = w.to_vec();
            amx::round_to_bf16(&mut r);
            Products::F32(DenseF32Matrix::new(&r, rows, cols))
        };
        DenseBf16Matrix {
            rows,
            cols,
            w: w.to_vec(),
            products,
        }
    }
}

impl Matrix for DenseBf16Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        check_matmul_args(self, x, n_tok, y);
        match &self.products {
            #[cfg(target_arch = "x86_64")]
            Products::Amx { panels, cols_p } => {
                tiles::matmul(panels, *cols_p, self.rows, self.cols, x, n_tok, y)
            }
            #[cfg(not(target_arch = "x86_64"))]
            Products::Amx { .. } => unreachable!("AMX is detected only on x86_64"),
            Products::F32(m) => {
                let mut xr = x.to_vec();
                amx::round_to_bf16(&mut xr);
                m.matmul(&xr, n_tok, y)
            }
        }
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.w[r * self.cols..(r + 1) * self.cols]);
    }

    fn format(&self) -> String {
        "BF16 products (calibration)".into()
    }

    fn storage_bytes(&self) -> usize {
        4 * self.rows * self.cols
    }
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::BLOCK;
    use crate::cpu::amx::{self, Pooled};
    use crate::matrix::OutPtr;

    /// Tokens one parallel task multiplies: it converts its own rows to bf16 (on its core,
    /// where the tiles then read them) and loads the tile configuration once. Eight tasks per
    /// 512-token sample: with four, a helper waking late left the caller waiting on its last
    /// task (`quantize int8` 8.6 → 8.2 s).
    const TASK_TOKENS: usize = 2 * BLOCK;

    pub(super) fn matmul(
        panels: &[u32],
        cols_p: usize,
        rows: usize,
        cols: usize,
        x: &[f32],
        n_tok: usize,
        y: &mut [f32],
    ) {
        let kc = cols_p / amx::K;
        let pairs = rows.div_ceil(BLOCK);
        let out = OutPtr(y.as_mut_ptr());
        let task = |i: usize| {
            let t0 = i * TASK_TOKENS;
            let n = TASK_TOKENS.min(n_tok - t0);
            let tok_p = n.next_multiple_of(BLOCK);
            let mut xb = u16::take(tok_p * cols_p);
            amx::to_padded_bf16(
                &x[t0 * cols..(t0 + n) * cols],
                n,
                cols,
                tok_p,
                cols_p,
                &mut xb,
            );
            // SAFETY: features() reported AMX (this matrix was built for it).
            let tiles = unsafe { amx::Tiles::configure() };
            let mut scratch = [0f32; BLOCK * BLOCK];
            for tb in (0..tok_p).step_by(BLOCK) {
                let a = xb[tb * cols_p..].as_ptr();
                for pp in 0..pairs {
                    let r0 = pp * BLOCK;
                    let (b0, b1) = (
                        amx::panel(panels, kc, 2 * pp),
                        amx::panel(panels, kc, 2 * pp + 1),
                    );
                    let op = amx::Operands {
                        a,
                        a_stride: 2 * cols_p,
                        b0,
                        b1,
                        kc,
                    };
                    let full = tb + BLOCK <= n && r0 + BLOCK <= rows;
                    let at = (t0 + tb) * rows + r0;
                    // SAFETY: xb holds tok_p rows of cols_p bf16; the panels hold kc tiles
                    // each; a full block lies inside y (tokens t0 + tb.., rows r0..), which only
                    // this task writes, and the scratch holds 32 × 32.
                    unsafe {
                        if full {
                            tiles.block_32x32(op, out.at(at), 4 * rows);
                        } else {
                            tiles.block_32x32(op, scratch.as_mut_ptr(), 4 * BLOCK);
                            for t in 0..BLOCK.min(n.saturating_sub(tb)) {
                                for j in 0..BLOCK.min(rows - r0) {
                                    out.write(at + t * rows + j, scratch[t * BLOCK + j]);
                                }
                            }
                        }
                    }
                }
            }
            u16::give(xb);
        };
        crate::parallel::for_each(n_tok.div_ceil(TASK_TOKENS), task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::assert_matches_f64;
    use rand::{Rng, SeedableRng};

    fn bf16(v: f32) -> f64 {
        half::bf16::from_f32(v).to_f64()
    }

    /// Both paths against a float64 product of the bf16-rounded operands.
    #[test]
    fn matches_float64_of_the_rounded_operands() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for (rows, cols) in [(1, 1), (5, 7), (33, 64), (64, 576), (70, 130), (32, 32)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            for &use_amx in amx::paths_to_test() {
                let m = DenseBf16Matrix::with_amx(&w, rows, cols, use_amx);
                for n_tok in [1, 3, 31, 32, 33, 200] {
                    let x: Vec<f32> = (0..n_tok * cols)
                        .map(|i| {
                            if i % 97 == 0 {
                                0.0
                            } else {
                                rng.random_range(-300.0..300.0)
                            }
                        })
                        .collect();
                    let mut y = vec![0f32; n_tok * rows];
                    m.matmul(&x, n_tok, &mut y);
                    let (wr, xr): (Vec<f64>, Vec<f64>) = (
                        w.iter().map(|v| bf16(*v)).collect(),
                        x.iter().map(|v| bf16(*v)).collect(),
                    );
                    let what = format!("amx {use_amx} {rows}x{cols}");
                    assert_matches_f64(&y, &wr, &xr, n_tok, 1e-30, &what);
                }
                let mut row = vec![0f32; cols];
                m.dequantize_row(rows - 1, &mut row);
                assert_eq!(row, w[(rows - 1) * cols..], "rows come back unrounded");
            }
        }
    }
}
