//! Loads models and artifacts and runs the Llama-family graph on CPU.

pub mod bench;
pub mod export;
pub mod generate;
pub mod hf_gguf;
pub mod loader;
pub mod model;
pub mod tokenizer;

pub use loader::{load, LoadError};
pub use model::{KvCache, Model};
pub use tokenizer::Tokenizer;
