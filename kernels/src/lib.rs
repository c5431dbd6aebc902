//! Fast compute for the runtime: CPU SIMD kernels with run-time feature detection and scalar
//! fallbacks. Formats are defined by `quant`; its reference codecs are these kernels' test oracle.
//!
//! Quantized matmul works as llama.cpp's CPU backend does: [`GgmlMatrix::matmul`] quantizes the
//! activations once per call ([`cpu::q8`]: Q8_0, Q8_1 or Q8_K, by weight type), then runs integer
//! dot products per block ([`cpu::vec_dot::DotKernel`], one per type and instruction-set level,
//! picked when the matrix is built) over tiles of weight rows × tokens in parallel.

pub mod attention;
pub mod attention_bf16;
pub mod cpu;
pub mod dense_bf16;
pub mod dense_f32;
pub mod fp8_matrix;
pub mod ggml_matrix;
pub mod gram;
pub mod group_quant;
pub mod int8_matrix;
pub mod matrix;
pub mod ops;
pub mod parallel;
pub mod scaled;

pub use dense_bf16::DenseBf16Matrix;
pub use dense_f32::DenseF32Matrix;
pub use fp8_matrix::{Fp8Activations, Fp8Matrix, Fp8WeightScale};
pub use ggml_matrix::{GgmlMatrix, MatrixError};
pub use group_quant::GroupQuantMatrix;
pub use int8_matrix::{Int8Activations, Int8Matrix};
pub use matrix::{ClipCount, Matrix, SharedMatrix};
pub use scaled::ScaledMatrixError;
