//! Fast compute for the runtime: CPU SIMD kernels with run-time feature detection and scalar
//! fallbacks. Formats are defined by `quant`; its reference codecs are these kernels' test oracle.

pub mod cpu;
pub mod ggml_matrix;
pub mod matrix;
pub mod ops;

pub use ggml_matrix::{GgmlMatrix, MatrixError};
pub use matrix::{Matrix, SharedMatrix};
