//! GGUF files: reader (and, with the converter, writer).

pub mod reader;
pub mod value;

pub use reader::{GgufError, GgufFile, TensorInfo};
pub use value::{Value, ValueType};
