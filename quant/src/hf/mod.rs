//! Hugging Face model folder formats.

pub mod card;
pub mod compressed_tensors;
pub mod config;

pub use card::ModelCard;
pub use config::{ConfigError, Family, Llama3Scaling, LlamaConfig, RopeScaling};
