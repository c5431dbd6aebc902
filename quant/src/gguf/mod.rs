//! GGUF files: reader (and, with the converter, writer).

pub mod quantize;
pub mod reader;
pub mod value;
pub mod writer;

pub use quantize::{
    quantize_model, ImatrixSource, QuantizeModelError, QuantizeParams, QuantizeReport, TensorReport,
};
pub use reader::{GgufError, GgufFile, TensorInfo};
pub use value::{Value, ValueType};
pub use writer::{GgufWriteError, GgufWriter, TensorDesc};
