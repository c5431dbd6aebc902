//! Opens a model: a GGUF file or a Hugging Face folder (single or sharded safetensors, dense or
//! one of the quantized formats this project writes).

pub mod awq;
pub mod compressed_tensors;
pub mod gguf;
pub mod gptq;
mod group_quant;
pub mod hf;
pub mod pack_quantized;
pub mod safetensors_dir;

use std::path::{Path, PathBuf};

use crate::model::Model;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] quant::gguf::GgufError),
    #[error(transparent)]
    Config(#[from] quant::hf::ConfigError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("{path}: tensor {name} is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name}: shape {got:?}, expected {want:?}")]
    Shape {
        path: PathBuf,
        name: String,
        want: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tensor {name}: {msg}")]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    #[error("{path}: {field}: {msg}")]
    Unsupported {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: not a GGUF file or a Hugging Face model folder (no config.json)")]
    NotAModel { path: PathBuf },
}

/// Loads the model at `path`: a `.gguf` file or a folder with config.json.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    if path.is_dir() {
        if !path.join("config.json").exists() {
            return Err(LoadError::NotAModel {
                path: path.to_owned(),
            });
        }
        return hf::load(path);
    }
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
    if n == 4 && &magic == quant::gguf::reader::GGUF_MAGIC
        || path.extension().is_some_and(|e| e == "gguf")
    {
        return gguf::load(path);
    }
    Err(LoadError::NotAModel {
        path: path.to_owned(),
    })
}
