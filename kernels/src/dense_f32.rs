//! f32 weights packed for large batches: the calibration pipeline multiplies every block's
//! linears with thousands of tokens at a time, where a register-blocked GEMM beats per-row dot
//! products. Rows are packed in panels of 32 output features stored input-feature-major, so the
//! micro-kernel loads 32 weights per input feature and broadcasts the activations of 6 tokens
//! into 12 vector accumulators (AVX-512; AVX2 uses panels of 16); small batches fall back to
//! dot products.

use crate::cpu::features::features;
use crate::matrix::{check_matmul_args, Matrix, OutPtr};

/// Output features per panel.
const NR: usize = 32;
/// Tokens per micro-kernel call.
const MR: usize = 6;

pub struct DenseF32Matrix {
    rows: usize,
    cols: usize,
    /// ceil(rows/NR) panels of cols × NR values (zero past the last row).
    panels: Vec<f32>,
}

impl DenseF32Matrix {
    /// Packs the row-major [rows × cols] `w`.
    pub fn new(w: &[f32], rows: usize, cols: usize) -> DenseF32Matrix {
        assert_eq!(w.len(), rows * cols, "weights are not rows × cols");
        let np = rows.div_ceil(NR);
        let mut panels = vec![0f32; np * cols * NR];
        for (p, panel) in panels.chunks_exact_mut(cols * NR).enumerate() {
            for r in p * NR..((p + 1) * NR).min(rows) {
                let j = r - p * NR;
                for (k, &v) in w[r * cols..(r + 1) * cols].iter().enumerate() {
                    panel[k * NR + j] = v;
                }
            }
        }
        DenseF32Matrix { rows, cols, panels }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.cols * NR..(p + 1) * self.cols * NR]
    }
}

/// acc[t][j] = Σ_k x[t][k]·panel[k][j] for t < nt (≤ MR), j < NR.
type KernelFn = unsafe fn(panel: &[f32], x: &[f32], cols: usize, nt: usize) -> [[f32; NR]; MR];

fn kernel() -> KernelFn {
    #[cfg(target_arch = "x86_64")]
    {
        let f = features();
        if f.avx512f && f.fma {
            return x86::kernel_avx512;
        }
        if f.has_avx2_fma() {
            return x86::kernel_avx2;
        }
    }
    let _ = features;
    kernel_scalar
}

unsafe fn kernel_scalar(panel: &[f32], x: &[f32], cols: usize, nt: usize) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for k in 0..cols {
        let w = &panel[k * NR..(k + 1) * NR];
        for (t, a) in acc.iter_mut().enumerate().take(nt) {
            let xv = x[t * cols + k];
            for (a, w) in a.iter_mut().zip(w) {
                *a += xv * w;
            }
        }
    }
    acc
}

/// Below this many tokens the packed kernel's 6-token tiles are mostly empty.
const MIN_TOKENS: usize = 4;

impl Matrix for DenseF32Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        check_matmul_args(self, x, n_tok, y);
        let (rows, cols) = (self.rows, self.cols);
        let out = OutPtr(y.as_mut_ptr());
        if n_tok < MIN_TOKENS {
            let mut w = vec![0f32; cols];
            for r in 0..rows {
                self.dequantize_row(r, &mut w);
                for t in 0..n_tok {
                    let v = crate::cpu::dot_f32(&w, &x[t * cols..(t + 1) * cols]);
                    // SAFETY: t·rows + r < n_tok·rows = y.len(); one thread.
                    unsafe { out.write(t * rows + r, v) };
                }
            }
            return;
        }
        let k = kernel();
        let run = |p: usize| {
            let panel = self.panel(p);
            let r0 = p * NR;
            let nr = NR.min(rows - r0);
            for t0 in (0..n_tok).step_by(MR) {
                let nt = MR.min(n_tok - t0);
                // SAFETY: the kernel's features were detected; the panel holds cols × NR values
                // and x holds nt rows of cols from token t0.
                let acc = unsafe { k(panel, &x[t0 * cols..], cols, nt) };
                for (t, a) in acc.iter().enumerate().take(nt) {
                    for (j, v) in a.iter().enumerate().take(nr) {
                        // SAFETY: (t0+t)·rows + r0 + j < n_tok·rows; panels own disjoint rows.
                        unsafe { out.write((t0 + t) * rows + r0 + j, *v) };
                    }
                }
            }
        };
        let np = rows.div_ceil(NR);
        if rows * cols * n_tok < 1 << 20 {
            (0..np).for_each(run);
        } else {
            crate::parallel::for_each(np, run);
        }
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let panel = self.panel(r / NR);
        for (k, o) in out.iter_mut().enumerate() {
            *o = panel[k * NR + r % NR];
        }
    }

    fn format(&self) -> String {
        "F32 (packed)".into()
    }

    fn storage_bytes(&self) -> usize {
        4 * self.rows * self.cols
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn kernel_avx512(
        panel: &[f32],
        x: &[f32],
        cols: usize,
        nt: usize,
    ) -> [[f32; NR]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (pw, px) = (panel.as_ptr(), x.as_ptr());
        // Rows past nt read token 0 again (in bounds) and are dropped.
        let rows: [usize; MR] = std::array::from_fn(|t| if t < nt { t * cols } else { 0 });
        for k in 0..cols {
            let w0 = _mm512_loadu_ps(pw.add(k * NR));
            let w1 = _mm512_loadu_ps(pw.add(k * NR + 16));
            for (t, a) in acc.iter_mut().enumerate() {
                let xb = _mm512_set1_ps(*px.add(rows[t] + k));
                a[0] = _mm512_fmadd_ps(xb, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xb, w1, a[1]);
            }
        }
        let mut out = [[0f32; NR]; MR];
        for (o, a) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), a[1]);
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_avx2(
        panel: &[f32],
        x: &[f32],
        cols: usize,
        nt: usize,
    ) -> [[f32; NR]; MR] {
        let mut out = [[0f32; NR]; MR];
        let (pw, px) = (panel.as_ptr(), x.as_ptr());
        let rows: [usize; MR] = std::array::from_fn(|t| if t < nt { t * cols } else { 0 });
        // Two halves of 16 outputs: 6 tokens × 2 vectors of 8 = 12 accumulators.
        for h in 0..2 {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for k in 0..cols {
                let w0 = _mm256_loadu_ps(pw.add(k * NR + 16 * h));
                let w1 = _mm256_loadu_ps(pw.add(k * NR + 16 * h + 8));
                for (t, a) in acc.iter_mut().enumerate() {
                    let xb = _mm256_set1_ps(*px.add(rows[t] + k));
                    a[0] = _mm256_fmadd_ps(xb, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(xb, w1, a[1]);
                }
            }
            for (o, a) in out.iter_mut().zip(&acc) {
                _mm256_storeu_ps(o.as_mut_ptr().add(16 * h), a[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(16 * h + 8), a[1]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::assert_matches_f64;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_float64_for_every_shape_and_batch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for (rows, cols) in [(1, 1), (5, 7), (33, 64), (64, 576), (70, 130)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let m = DenseF32Matrix::new(&w, rows, cols);
            for n_tok in [1, 3, 4, 6, 7, 13] {
                let x: Vec<f32> = (0..n_tok * cols)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let mut y = vec![0f32; n_tok * rows];
                m.matmul(&x, n_tok, &mut y);
                let f64s = |v: &[f32]| v.iter().map(|v| *v as f64).collect::<Vec<_>>();
                let what = format!("{rows}x{cols}");
                assert_matches_f64(&y, &f64s(&w), &f64s(&x), n_tok, 1e-6, &what);
            }
            let mut row = vec![0f32; cols];
            m.dequantize_row(rows - 1, &mut row);
            assert_eq!(row, w[(rows - 1) * cols..]);
        }
    }
}
