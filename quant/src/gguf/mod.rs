//! GGUF files: reader, writer, and whole-model quantization from any tensor source.

pub mod quantize;
pub mod reader;
pub mod source;
pub mod value;
pub mod writer;

pub use quantize::{
    quantize_model, quantize_source, ImatrixSource, QuantizeModelError, QuantizeParams,
    QuantizeReport, TensorReport,
};
pub use reader::{GgufError, GgufFile, TensorInfo};
pub use source::TensorSource;
pub use value::{Value, ValueType};
pub use writer::{GgufWriteError, GgufWriter, TensorDesc};
