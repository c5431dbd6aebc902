//! The safetensors files of a Hugging Face folder (one file, or shards listed by
//! model.safetensors.index.json), memory-mapped, with every tensor's location validated.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use quant::bytes::SharedBytes;
use safetensors::{Dtype, SafeTensors};

use super::LoadError;

#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub file: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

pub struct SafetensorsDir {
    pub dir: PathBuf,
    files: Vec<(PathBuf, Arc<Mmap>)>,
    tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<SafetensorsDir, LoadError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LoadError::Io { path, source }
        };
        let index = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| LoadError::Safetensors {
                    path: index.clone(),
                    msg: format!("index is not valid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| LoadError::Safetensors {
                    path: index.clone(),
                    msg: "field weight_map is missing or not an object".into(),
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            files.sort();
            files.dedup();
            files
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(LoadError::MissingTensor {
                    path: dir.to_owned(),
                    name: "model.safetensors (or model.safetensors.index.json)".into(),
                });
            }
            vec!["model.safetensors".into()]
        };

        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (fi, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let f = File::open(&path).map_err(io(&path))?;
            // SAFETY: read-only map of a model file; see quant::gguf::reader.
            let map = unsafe { Mmap::map(&f) }.map_err(io(&path))?;
            let (header_len, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| LoadError::Safetensors {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
            let data_start = 8 + header_len;
            for (tname, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                tensors.insert(
                    tname.clone(),
                    TensorEntry {
                        file: fi,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: data_start + s,
                        end: data_start + e,
                    },
                );
            }
            files.push((path, Arc::new(map)));
        }
        Ok(SafetensorsDir {
            dir: dir.to_owned(),
            files,
            tensors,
        })
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn file_path(&self, e: &TensorEntry) -> &Path {
        &self.files[e.file].0
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry, LoadError> {
        self.get(name).ok_or_else(|| LoadError::MissingTensor {
            path: self.dir.clone(),
            name: name.into(),
        })
    }

    /// The tensor's bytes as a window of its file's memory map.
    pub fn bytes(&self, e: &TensorEntry) -> SharedBytes {
        SharedBytes::new(self.files[e.file].1.clone(), e.start..e.end)
    }

    /// The tensor's bytes, borrowed from its file's memory map.
    pub fn slice(&self, e: &TensorEntry) -> &[u8] {
        &self.files[e.file].1[e.start..e.end]
    }

    /// Lets the tensor's pages leave this process's resident memory (see
    /// `quant::gguf::reader::release_pages`).
    pub fn release(&self, e: &TensorEntry) {
        quant::gguf::reader::release_pages(&self.files[e.file].1, e.start, e.end - e.start);
    }

    /// An entry with a required dtype and shape.
    pub fn expect(
        &self,
        name: &str,
        dtypes: &[Dtype],
        shape: &[usize],
    ) -> Result<&TensorEntry, LoadError> {
        let e = self.entry(name)?;
        if !dtypes.contains(&e.dtype) {
            return Err(LoadError::Tensor {
                path: self.file_path(e).to_owned(),
                name: name.into(),
                msg: format!("dtype {:?}, expected one of {dtypes:?}", e.dtype),
            });
        }
        if e.shape != shape {
            return Err(LoadError::Shape {
                path: self.file_path(e).to_owned(),
                name: name.into(),
                want: shape.to_vec(),
                got: e.shape.clone(),
            });
        }
        Ok(e)
    }

    /// A 1-D float tensor as f32.
    pub fn vector_f32(&self, name: &str, n: usize) -> Result<Vec<f32>, LoadError> {
        let e = self.expect(name, &[Dtype::F32, Dtype::F16, Dtype::BF16], &[n])?;
        let ty = dense_ggml_type(e.dtype).expect("float dtype checked above");
        let mut v = vec![0f32; n];
        quant::ggml::dequantize_row(ty, &self.bytes(e), &mut v).map_err(|err| {
            LoadError::Tensor {
                path: self.file_path(e).to_owned(),
                name: name.into(),
                msg: err.to_string(),
            }
        })?;
        Ok(v)
    }
}

/// The ggml type with the same bytes as a dense safetensors dtype.
pub fn dense_ggml_type(d: Dtype) -> Option<quant::ggml::GgmlType> {
    use quant::ggml::GgmlType;
    match d {
        Dtype::F32 => Some(GgmlType::F32),
        Dtype::F16 => Some(GgmlType::F16),
        Dtype::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}
