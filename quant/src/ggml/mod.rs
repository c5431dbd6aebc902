//! ggml tensor types: block layouts and reference codecs.

pub mod blocks;
pub mod dequant;
pub mod types;

pub use dequant::{dequantize_row, CodecError};
pub use types::{GgmlType, QK_K};
