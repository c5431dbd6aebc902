//! ggml tensor types: block layouts and reference codecs.

pub mod blocks;
pub mod dequant;
pub mod mix;
pub mod quantize;
pub mod types;

pub use dequant::{dequantize_row, CodecError};
pub use quantize::{quantize_row, quantize_rows, QuantizeError};
pub use types::{GgmlType, QK_K};
