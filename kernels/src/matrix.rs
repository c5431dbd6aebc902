//! The weight-matrix abstraction the runtime multiplies with. Each storage format (ggml types,
//! group-quantized int4, int8, fp8) implements it; weights stay in their stored form and are
//! decoded block by block inside the product.

use std::sync::Arc;

/// A [rows × cols] weight matrix (rows = output features, cols = input features), as nn.Linear.
pub trait Matrix: Send + Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;

    /// y[t·rows + r] = Σ_c W[r, c] · x[t·cols + c] for t in 0..n_tok.
    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]);

    /// Decodes row `r` into `out` (cols elements) with the format's reference codec.
    fn dequantize_row(&self, r: usize, out: &mut [f32]);

    /// The storage format, for reports ("Q4_K", "BF16", "int4 g128 asym", ...).
    fn format(&self) -> String;

    /// Bytes the weights occupy in their stored form.
    fn storage_bytes(&self) -> usize;

    /// Gets the matrix ready for products, for formats that rearrange their weights for the
    /// kernels (as `GgmlMatrix` does on AVX-512): callers that time products call it first, so
    /// the one-time work is not counted in the first product. Products work without it.
    fn prepare(&self) {}

    /// For formats that quantize activations with a calibrated (static) scale: how many
    /// activation values so far lay beyond what the scale represents and were saturated.
    fn clipped_activations(&self) -> Option<ClipCount> {
        None
    }
}

/// Activation values a static scale saturated, out of all it quantized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClipCount {
    pub clipped: u64,
    pub seen: u64,
}

pub type SharedMatrix = Arc<dyn Matrix>;

/// Checks matmul argument sizes; every implementation calls it first.
pub fn check_matmul_args(m: &dyn Matrix, x: &[f32], n_tok: usize, y: &[f32]) {
    assert_eq!(
        x.len(),
        n_tok * m.cols(),
        "matmul input is not n_tok × cols"
    );
    assert_eq!(
        y.len(),
        n_tok * m.rows(),
        "matmul output is not n_tok × rows"
    );
}

/// Raw output pointer shared by the row-parallel kernels; each task writes a disjoint set of rows.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: tasks write disjoint elements (distinct rows r), never read them, and the slice outlives
// the parallel loop that uses the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// SAFETY: caller guarantees `i` is in bounds and no other task writes element `i`.
    #[inline]
    pub(crate) unsafe fn write(self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }

    /// The address of element `i`, for kernels that store whole vectors.
    /// SAFETY: caller guarantees `i` is in bounds.
    #[inline]
    pub(crate) unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// Test support: `y` (n_tok × rows, from `m.matmul`) against the float64 product of the
/// operands as the format defines them (`w` rows × cols, `x` n_tok × cols), within 1e-5 of
/// each output's Σ|products| plus `abs`.
#[cfg(test)]
pub(crate) fn assert_matches_f64(
    y: &[f32],
    w: &[f64],
    x: &[f64],
    n_tok: usize,
    abs: f64,
    what: &str,
) {
    let cols = x.len() / n_tok.max(1);
    let rows = w.len() / cols.max(1);
    for t in 0..n_tok {
        for r in 0..rows {
            let (mut want, mut mag) = (0f64, 0f64);
            for c in 0..cols {
                let p = w[r * cols + c] * x[t * cols + c];
                want += p;
                mag += p.abs();
            }
            let got = y[t * rows + r] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * mag + abs,
                "{what} n_tok {n_tok} ({t},{r}): {got} vs {want}"
            );
        }
    }
}
