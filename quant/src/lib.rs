//! Number formats and quantizers as pure functions, and the artifact file formats.

pub mod atomic;
pub mod awq;
pub mod bytes;
pub mod fp8;
pub mod ggml;
pub mod gguf;
pub mod gptq;
pub mod groupq;
pub mod hf;
pub mod imatrix;
pub mod int8;
pub mod safetensors_out;
pub mod smoothquant;
