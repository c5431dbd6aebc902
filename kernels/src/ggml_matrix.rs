//! Matrices stored in a ggml type (F32/F16/BF16 and every block-quantized type), read in place
//! from a memory-mapped GGUF or safetensors file.

use quant::bytes::SharedBytes;
use quant::ggml::{dequantize_row, GgmlType};
use rayon::prelude::*;

use crate::cpu::dot_f32;
use crate::matrix::{check_matmul_args, Matrix, OutPtr};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatrixError {
    #[error("{ty} matrix [{rows} x {cols}] needs {want} bytes, got {got}")]
    Size {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        want: usize,
        got: usize,
    },
    #[error("{ty} cannot hold rows of {cols} elements (block size {block})")]
    RowLength {
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("{ty} is an activation-only type, not a weight type")]
    NotAWeightType { ty: GgmlType },
}

pub struct GgmlMatrix {
    ty: GgmlType,
    data: SharedBytes,
    rows: usize,
    cols: usize,
    row_bytes: usize,
}

impl GgmlMatrix {
    pub fn new(
        ty: GgmlType,
        data: SharedBytes,
        rows: usize,
        cols: usize,
    ) -> Result<GgmlMatrix, MatrixError> {
        if matches!(ty, GgmlType::Q8_1 | GgmlType::Q8K) {
            return Err(MatrixError::NotAWeightType { ty });
        }
        let row_bytes = ty.row_bytes(cols).ok_or(MatrixError::RowLength {
            ty,
            cols,
            block: ty.block_size(),
        })?;
        if data.len() != rows * row_bytes {
            return Err(MatrixError::Size {
                ty,
                rows,
                cols,
                want: rows * row_bytes,
                got: data.len(),
            });
        }
        Ok(GgmlMatrix {
            ty,
            data,
            rows,
            cols,
            row_bytes,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The stored bytes of row `r`.
    pub fn row_bytes_of(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    pub fn data(&self) -> &SharedBytes {
        &self.data
    }
}

impl Matrix for GgmlMatrix {
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
        // Decode each weight row once and reuse it for every token of the batch.
        (0..rows).into_par_iter().with_min_len(8).for_each_init(
            || vec![0f32; cols],
            |buf, r| {
                self.dequantize_row(r, buf);
                for t in 0..n_tok {
                    let v = dot_f32(buf, &x[t * cols..(t + 1) * cols]);
                    // SAFETY: t·rows + r < n_tok·rows = y.len(); row r belongs to this task.
                    unsafe { out.write(t * rows + r, v) };
                }
            },
        );
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row_bytes_of(r), out)
            .expect("row geometry was checked at construction");
    }

    fn format(&self) -> String {
        self.ty.name().to_owned()
    }

    fn storage_bytes(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_matmul_matches_float64() {
        let (rows, cols, n_tok) = (5, 40, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = GgmlMatrix::new(GgmlType::F32, SharedBytes::from_vec(bytes), rows, cols).unwrap();
        let mut y = vec![0f32; n_tok * rows];
        m.matmul(&x, n_tok, &mut y);
        for t in 0..n_tok {
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[t * cols + c] as f64)
                    .sum();
                assert!((y[t * rows + r] as f64 - want).abs() < 1e-4, "t={t} r={r}");
            }
        }
    }

    #[test]
    fn rejects_bad_geometry() {
        let e = GgmlMatrix::new(GgmlType::Q4_0, SharedBytes::from_vec(vec![0; 18]), 1, 33);
        assert!(matches!(e, Err(MatrixError::RowLength { .. })));
        let e = GgmlMatrix::new(GgmlType::Q4_0, SharedBytes::from_vec(vec![0; 17]), 1, 32);
        assert!(matches!(e, Err(MatrixError::Size { .. })));
    }
}
