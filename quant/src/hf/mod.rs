//! Hugging Face model folder formats.

pub mod awq;
pub mod bitpack;
pub mod card;
pub mod compressed_tensors;
pub mod config;
pub mod gptq;
pub mod pack_quantized;

pub use card::ModelCard;
pub use config::{ConfigError, Family, Llama3Scaling, LlamaConfig, RopeScaling};
