//! Hugging Face model folder formats.

pub mod config;

pub use config::{ConfigError, Family, Llama3Scaling, LlamaConfig, RopeScaling};
