//! Symmetric int8 weights with one scale per output row (compressed-tensors' int-quantized W8A8
//! and pack-quantized W8A16 layouts, once unpacked).
//!
//! W8A8 multiplies as vLLM does: each token's activations are quantized to int8 on the fly (per
//! token, amax/127, round half to even; [`Int8Kernels::quantize_token`]), the products are
//! summed exactly in i32, and y = (acc · w_scale) · x_scale in f32. W8A16 multiplies the
//! decoded weights with the f32 activations. `QUANTIZE_ACTIVATIONS=f32` makes W8A8 do the same,
//! to measure the weights' error alone.

use quant::bytes::SharedBytes;
use quant::ggml::GgmlType;

use crate::cpu::features::exact_activations;
use crate::cpu::int8::{Int8Kernels, NT};
use crate::cpu::vec_dot::DotKernel;
use crate::cpu::Isa;
use crate::matrix::{check_matmul_args, Matrix, OutPtr};
use crate::scaled::{
    check_scales, float_dots, for_each_block, for_each_token, with_row_buffer, ScaledMatrixError,
};

/// What happens to the activations of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Activations {
    /// Quantized per token at run time (W8A8).
    DynamicPerToken,
    /// Used as they are (W8A16).
    Unquantized,
}

pub struct Int8Matrix {
    q: SharedBytes,
    rows: usize,
    cols: usize,
    scales: Vec<f32>,
    act: Int8Activations,
    kernels: Int8Kernels,
    /// The f32 kernel for decoded rows (W8A16).
    float: DotKernel,
}

impl Int8Matrix {
    /// `q`: rows × cols int8 values, row-major; `scales`: one per row.
    pub fn new(
        q: SharedBytes,
        rows: usize,
        cols: usize,
        scales: Vec<f32>,
        act: Int8Activations,
    ) -> Result<Int8Matrix, ScaledMatrixError> {
        let size = |what, want, got| ScaledMatrixError::Size {
            what,
            rows,
            cols,
            want,
            got,
        };
        if q.len() != rows * cols {
            return Err(size("int8 weights", rows * cols, q.len()));
        }
        if scales.len() != rows {
            return Err(size("weight scales", rows, scales.len()));
        }
        check_scales("weight scale", &scales)?;
        Ok(Int8Matrix {
            q,
            rows,
            cols,
            scales,
            act,
            kernels: Int8Kernels::best(),
            float: DotKernel::new(GgmlType::F32, Isa::best())
                .expect("F32 has kernels at every level"),
        })
    }

    /// The same matrix multiplied with the kernels of `isa`, or None when this CPU lacks it.
    pub fn with_isa(self, isa: Isa) -> Option<Int8Matrix> {
        Some(Int8Matrix {
            kernels: Int8Kernels::new(isa)?,
            float: DotKernel::new(GgmlType::F32, isa)?,
            ..self
        })
    }

    pub fn activations(&self) -> Int8Activations {
        self.act
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    pub fn row(&self, r: usize) -> &[i8] {
        bytemuck::cast_slice(&self.q[r * self.cols..(r + 1) * self.cols])
    }

    fn matmul_w8a8(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        let cols = self.cols;
        let mut qx = vec![0i8; n_tok * cols];
        let mut sx = vec![0f32; n_tok];
        let k = self.kernels;
        let jobs: Vec<_> = qx
            .chunks_mut(cols)
            .zip(&mut sx)
            .zip(x.chunks(cols))
            .collect();
        for_each_token(jobs, |((q, s), x)| *s = k.quantize_token(x, q));
        let out = OutPtr(y.as_mut_ptr());
        let (qx, sx) = (&qx, &sx);
        for_each_block(self.rows, n_tok, cols, |rows, toks| {
            for t in toks.clone().step_by(NT) {
                let nt = NT.min(toks.end - t);
                for r in rows.clone() {
                    // SAFETY: nt ≤ NT; qx holds n_tok rows of `cols` values from the per-token
                    // quantizer, which keeps them in [−127, 127].
                    let acc =
                        unsafe { k.dot_tile_unchecked(self.row(r), &qx[t * cols..], cols, nt) };
                    for j in 0..nt {
                        let v = acc[j] as f32 * self.scales[r] * sx[t + j];
                        // SAFETY: (t+j)·rows + r < n_tok·rows = y.len(); blocks are disjoint.
                        unsafe { out.write((t + j) * self.rows + r, v) };
                    }
                }
            }
        });
    }

    fn matmul_w8a16(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        let cols = self.cols;
        let out = OutPtr(y.as_mut_ptr());
        for_each_block(self.rows, n_tok, cols, |rows, toks| {
            with_row_buffer(cols, |w| {
                for r in rows {
                    for (w, &q) in w.iter_mut().zip(self.row(r)) {
                        *w = q as f32;
                    }
                    float_dots(&self.float, w, x, cols, 0..cols, toks.clone(), |t, v| {
                        // SAFETY: as in matmul_w8a8.
                        unsafe { out.write(t * self.rows + r, v * self.scales[r]) };
                    });
                }
            })
        });
    }
}

impl Matrix for Int8Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        check_matmul_args(self, x, n_tok, y);
        if self.act == Int8Activations::DynamicPerToken && !exact_activations() {
            self.matmul_w8a8(x, n_tok, y)
        } else {
            self.matmul_w8a16(x, n_tok, y)
        }
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let s = self.scales[r];
        for (o, &q) in out.iter_mut().zip(self.row(r)) {
            *o = q as f32 * s;
        }
    }

    fn format(&self) -> String {
        match self.act {
            Int8Activations::DynamicPerToken => "int8 W8A8 (per-channel, per-token dynamic)".into(),
            Int8Activations::Unquantized => "int8 W8A16 (per-channel)".into(),
        }
    }

    fn storage_bytes(&self) -> usize {
        self.q.len() + 4 * self.scales.len()
    }
}
