//! Memory-mapped GGUF reader (versions 2 and 3). Every length and offset is checked against the
//! file before use, so a truncated or corrupt file gives an error naming the field, never a panic.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::value::{Value, ValueType};
use crate::bytes::SharedBytes;
use crate::ggml::GgmlType;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;
/// Longest tensor name llama.cpp accepts (GGML_MAX_NAME - 1).
const MAX_NAME: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (starts with {found:?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: String },
    #[error("{path}: unsupported GGUF version {version} (this reader handles versions 2 and 3)")]
    BadVersion { path: PathBuf, version: u32 },
    #[error("{path}: truncated: file ends inside {field} (needs byte {need}, file has {len})")]
    Truncated {
        path: PathBuf,
        field: String,
        need: u64,
        len: u64,
    },
    #[error("{path}: {field}: {msg}")]
    Invalid {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: tensor {name}: unknown ggml type id {id}")]
    UnknownType {
        path: PathBuf,
        name: String,
        id: u32,
    },
    #[error(
        "{path}: tensor {name}: data [{start}, {end}) lies past the end of the file ({len} bytes)"
    )]
    DataPastEnd {
        path: PathBuf,
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("{path}: metadata key {key}: {msg}")]
    Meta {
        path: PathBuf,
        key: String,
        msg: String,
    },
}

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: ne[0] (the row length, fastest varying) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (ne[0]).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    /// Number of rows (product of the other dims).
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }

    pub fn n_bytes(&self) -> u64 {
        self.n_elements() / self.ty.block_size() as u64 * self.ty.type_size() as u64
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    /// Key-value pairs in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    map: Arc<Mmap>,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, field: &str) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64).saturating_add(n);
        if end > self.buf.len() as u64 {
            return Err(GgufError::Truncated {
                path: self.path.to_owned(),
                field: field.to_owned(),
                need: end,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, field: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, field)?.try_into().unwrap())
    }

    fn u32(&mut self, field: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }

    fn string(&mut self, field: &str) -> Result<String, GgufError> {
        let n = self.u64(field)?;
        let bytes = self.take(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Invalid {
            path: self.path.to_owned(),
            field: field.to_owned(),
            msg: "string is not valid UTF-8".into(),
        })
    }

    fn value(&mut self, t: ValueType, field: &str) -> Result<Value, GgufError> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.arr::<1>(field)?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(field)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(field)?)),
            ValueType::Bool => match self.arr::<1>(field)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.invalid(field, format!("bool byte is {b}, not 0 or 1"))),
            },
            ValueType::String => Value::String(self.string(field)?),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(field)?)),
            ValueType::Array => {
                let et = self.u32(field)?;
                let elem = ValueType::from_id(et).ok_or_else(|| {
                    self.invalid(field, format!("unknown array element type {et}"))
                })?;
                if elem == ValueType::Array {
                    return Err(self.invalid(field, "nested arrays are not supported".into()));
                }
                let n = self.u64(field)?;
                // Each element takes at least one byte: reject counts the file cannot hold before
                // reserving memory for them.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(GgufError::Truncated {
                        path: self.path.to_owned(),
                        field: field.to_owned(),
                        need: self.pos as u64 + n,
                        len: self.buf.len() as u64,
                    });
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, field)?);
                }
                Value::Array(elem, v)
            }
        })
    }

    fn invalid(&self, field: &str, msg: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_owned(),
            field: field.to_owned(),
            msg,
        }
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is the
        // usual caveat of every mmap-based model loader.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Arc::new(map))
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<GgufFile, GgufError> {
        let buf: &[u8] = &map;
        let mut c = Cursor { path, buf, pos: 0 };
        let magic = c.arr::<4>("magic")?;
        if &magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                path: path.to_owned(),
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::BadVersion {
                path: path.to_owned(),
                version,
            });
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > buf.len() as u64 || n_kv > buf.len() as u64 {
            return Err(c.invalid(
                "header",
                format!("counts ({n_tensors} tensors, {n_kv} keys) exceed the file size"),
            ));
        }

        let mut metadata = Vec::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let tid = c.u32(&format!("metadata {key} type"))?;
            let t = ValueType::from_id(tid).ok_or_else(|| {
                c.invalid(
                    &format!("metadata {key}"),
                    format!("unknown value type {tid}"),
                )
            })?;
            let v = c.value(t, &format!("metadata {key}"))?;
            metadata.push((key, v));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_i64() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
                _ => {
                    return Err(c.invalid(
                        "metadata general.alignment",
                        format!("{v} is not a positive power of two"),
                    ))
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor #{i} name"))?;
            if name.len() > MAX_NAME {
                return Err(c.invalid(
                    &format!("tensor {name}"),
                    format!("name is {} bytes, the limit is {MAX_NAME}", name.len()),
                ));
            }
            let field = format!("tensor {name}");
            let n_dims = c.u32(&field)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.invalid(
                    &field,
                    format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&field)?);
            }
            let tid = c.u32(&field)?;
            let ty = GgmlType::from_id(tid).ok_or_else(|| GgufError::UnknownType {
                path: path.to_owned(),
                name: name.clone(),
                id: tid,
            })?;
            let offset = c.u64(&field)?;
            if dims.contains(&0) {
                return Err(c.invalid(&field, format!("zero-sized dimension in {dims:?}")));
            }
            if dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_none_or(|n| n > buf.len() as u64 * 8)
            {
                return Err(c.invalid(&field, format!("shape {dims:?} cannot fit in the file")));
            }
            if dims[0] % ty.block_size() as u64 != 0 {
                return Err(c.invalid(
                    &field,
                    format!(
                        "row length {} is not a multiple of {ty}'s block size {}",
                        dims[0],
                        ty.block_size()
                    ),
                ));
            }
            if offset % alignment != 0 {
                return Err(c.invalid(
                    &field,
                    format!("data offset {offset} is not aligned to {alignment}"),
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }

        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let len = buf.len() as u64;
        for t in &tensors {
            let start = data_offset + t.offset;
            let end = start + t.n_bytes();
            if end > len {
                return Err(GgufError::DataPastEnd {
                    path: path.to_owned(),
                    name: t.name.clone(),
                    start,
                    end,
                    len,
                });
            }
        }
        Ok(GgufFile {
            path: path.to_owned(),
            version,
            alignment,
            metadata,
            tensors,
            data_offset,
            map,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn meta_err(&self, key: &str, msg: impl Into<String>) -> GgufError {
        GgufError::Meta {
            path: self.path.clone(),
            key: key.to_owned(),
            msg: msg.into(),
        }
    }

    /// A required integer key.
    pub fn req_int(&self, key: &str) -> Result<i64, GgufError> {
        let v = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        v.as_i64()
            .ok_or_else(|| self.meta_err(key, format!("expected an integer, found {v}")))
    }

    /// An optional integer key (present but of the wrong type is an error).
    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.get(key).map(|_| self.req_int(key)).transpose()
    }

    pub fn opt_float(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.meta_err(key, format!("expected a number, found {v}")))
            })
            .transpose()
    }

    pub fn req_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        v.as_str()
            .ok_or_else(|| self.meta_err(key, format!("expected a string, found {v}")))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key).map(|_| self.req_str(key)).transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.meta_err(key, format!("expected a bool, found {v}")))
            })
            .transpose()
    }

    /// An optional array key whose elements all convert with `f`.
    pub fn opt_array<T>(
        &self,
        key: &str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let arr = v
            .as_array()
            .ok_or_else(|| self.meta_err(key, format!("expected an array, found {v}")))?;
        arr.iter()
            .enumerate()
            .map(|(i, e)| {
                f(e).ok_or_else(|| {
                    self.meta_err(key, format!("element {i} has the wrong type ({e})"))
                })
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor's data bytes (bounds were checked at open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.map[start..start + t.n_bytes() as usize]
    }

    /// The tensor's data as a shareable window of the memory map.
    pub fn tensor_shared(&self, t: &TensorInfo) -> SharedBytes {
        let start = (self.data_offset + t.offset) as usize;
        SharedBytes::new(self.map.clone(), start..start + t.n_bytes() as usize)
    }

    /// Lets the kernel drop the tensor's pages from this process's resident memory (the file
    /// stays in the page cache; a later read faults them back in). A hint: failures are ignored.
    pub fn release_tensor(&self, t: &TensorInfo) {
        release_pages(
            &self.map,
            (self.data_offset + t.offset) as usize,
            t.n_bytes() as usize,
        );
    }

    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }
}

/// Drops `len` bytes from `start` of a read-only file map from resident memory.
pub fn release_pages(map: &Mmap, start: usize, len: usize) {
    #[cfg(unix)]
    // SAFETY: the map is a read-only shared mapping of a file: MADV_DONTNEED only discards the
    // process's page-table entries, and any later access reads the same bytes back from the file.
    unsafe {
        let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len);
    }
    #[cfg(not(unix))]
    let _ = (map, start, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal valid v3 file: one string key, one F32 tensor of 8 elements.
    fn tiny_gguf() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(GGUF_MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, x: &str| {
            b.extend((x.len() as u64).to_le_bytes());
            b.extend(x.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..8 {
            b.extend((i as f32).to_le_bytes());
        }
        b
    }

    fn open_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        GgufFile::open(f.path())
    }

    #[test]
    fn reads_a_minimal_file() {
        let g = open_bytes(&tiny_gguf()).unwrap();
        assert_eq!(g.req_str("general.architecture").unwrap(), "llama");
        let t = g.tensor("w").unwrap();
        let data: Vec<f32> = g
            .tensor_data(t)
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(data, (0..8).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = tiny_gguf();
        for n in 0..full.len() {
            assert!(
                open_bytes(&full[..n]).is_err(),
                "prefix of {n} bytes was accepted"
            );
        }
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut b = tiny_gguf();
        b[..4].copy_from_slice(b"GGML");
        let e = open_bytes(&b).err().unwrap().to_string();
        assert!(e.contains("not a GGUF file"), "{e}");
    }

    #[test]
    fn unknown_type_names_the_tensor() {
        let mut b = tiny_gguf();
        // the tensor's type id sits 12 bytes before the data-section padding
        let pos = b.windows(1).position(|w| w == b"w").unwrap() + 1 + 4 + 8;
        b[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
        let e = open_bytes(&b).err().unwrap().to_string();
        assert!(e.contains("tensor w") && e.contains("99"), "{e}");
    }
}
