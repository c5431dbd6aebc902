//! Streaming GGUF v3 writer. The header (metadata, tensor infos with offsets computed up front)
//! is written first, then each tensor's data in declaration order, so a model is never held in
//! memory whole. The file is built in a temporary sibling and renamed into place by `finish`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::value::{Value, ValueType};
use crate::atomic::AtomicOutput;
use crate::ggml::GgmlType;

const VERSION: u32 = 3;
const MAX_DIMS: usize = 4;
/// Longest tensor name llama.cpp accepts (GGML_MAX_NAME - 1).
const MAX_NAME: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {field}: {msg}")]
    Invalid {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: expected data for tensor {expected}, got {got}")]
    OutOfOrder {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("{path}: tensor {name}: {got} data bytes, its shape and type need {want}")]
    WrongSize {
        path: PathBuf,
        name: String,
        want: u64,
        got: u64,
    },
    #[error("{path}: finished after {written} of {total} tensors (next missing: {next})")]
    Incomplete {
        path: PathBuf,
        written: usize,
        total: usize,
        next: String,
    },
}

/// A tensor to be written: name, GGUF dims (ne[0], the row length, first) and type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorDesc {
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ty: GgmlType) -> TensorDesc {
        TensorDesc {
            name: name.into(),
            dims,
            ty,
        }
    }

    /// Data bytes, or None when the row length is not a whole number of blocks.
    pub fn n_bytes(&self) -> Option<u64> {
        let n: u64 = self.dims.iter().product();
        let row = *self.dims.first()?;
        let bs = self.ty.block_size() as u64;
        (row % bs == 0).then(|| n / bs * self.ty.type_size() as u64)
    }
}

pub struct GgufWriter {
    out: AtomicOutput,
    file: BufWriter<File>,
    tensors: Vec<(TensorDesc, u64)>,
    alignment: u64,
    next: usize,
}

impl GgufWriter {
    /// Validates everything, then writes the header of `path` (into its temporary sibling).
    /// `general.alignment`, if among the metadata, sets the data alignment.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, Value)],
        tensors: Vec<TensorDesc>,
    ) -> Result<GgufWriter, GgufWriteError> {
        let dest = path.as_ref();
        let invalid = |field: &str, msg: String| GgufWriteError::Invalid {
            path: dest.to_owned(),
            field: field.to_owned(),
            msg,
        };
        let alignment = alignment(metadata).map_err(|m| invalid("general.alignment", m))?;
        let mut keys = HashSet::new();
        for (k, v) in metadata {
            if !keys.insert(k.as_str()) {
                return Err(invalid(&format!("metadata {k}"), "duplicate key".into()));
            }
            check_value(v).map_err(|m| invalid(&format!("metadata {k}"), m))?;
        }
        let mut names = HashSet::new();
        let mut sized = Vec::with_capacity(tensors.len());
        for t in tensors {
            let field = format!("tensor {}", t.name);
            if t.name.len() > MAX_NAME {
                let msg = format!("name is {} bytes, the limit is {MAX_NAME}", t.name.len());
                return Err(invalid(&field, msg));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid(&field, "duplicate tensor name".into()));
            }
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS || t.dims.contains(&0) {
                let msg = format!("shape {:?} (1 to {MAX_DIMS} non-zero dims)", t.dims);
                return Err(invalid(&field, msg));
            }
            let size = t.n_bytes().ok_or_else(|| {
                let msg = format!(
                    "row length {} is not a multiple of {}'s block size {}",
                    t.dims[0],
                    t.ty,
                    t.ty.block_size()
                );
                invalid(&field, msg)
            })?;
            sized.push((t, size));
        }

        let io = |source| GgufWriteError::Io {
            path: dest.to_owned(),
            source,
        };
        let out = AtomicOutput::file(dest).map_err(io)?;
        let file = File::create(out.path()).map_err(io)?;
        let header = header(metadata, &sized, alignment);
        let mut w = GgufWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            out,
            tensors: sized,
            alignment,
            next: 0,
        };
        w.write(&header)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), GgufWriteError> {
        self.file
            .write_all(bytes)
            .map_err(|source| GgufWriteError::Io {
                path: self.out.dest().to_owned(),
                source,
            })
    }

    /// The tensor whose data `write_tensor` expects next, if any.
    pub fn next_tensor(&self) -> Option<&TensorDesc> {
        self.tensors.get(self.next).map(|(t, _)| t)
    }

    /// Writes the data of tensor `name`, which must be the next one declared.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufWriteError> {
        let path = self.out.dest().to_owned();
        let Some((t, size)) = self.tensors.get(self.next) else {
            return Err(GgufWriteError::OutOfOrder {
                path,
                expected: "(none: all tensors written)".into(),
                got: name.to_owned(),
            });
        };
        if t.name != name {
            return Err(GgufWriteError::OutOfOrder {
                path,
                expected: t.name.clone(),
                got: name.to_owned(),
            });
        }
        if data.len() as u64 != *size {
            return Err(GgufWriteError::WrongSize {
                path,
                name: name.to_owned(),
                want: *size,
                got: data.len() as u64,
            });
        }
        let pad = (size.next_multiple_of(self.alignment) - size) as usize;
        self.next += 1;
        self.write(data)?;
        self.write(&vec![0u8; pad])
    }

    /// Flushes the file and moves it into place; every declared tensor must have been written.
    pub fn finish(mut self) -> Result<PathBuf, GgufWriteError> {
        let path = self.out.dest().to_owned();
        if let Some(t) = self.next_tensor() {
            return Err(GgufWriteError::Incomplete {
                path,
                written: self.next,
                total: self.tensors.len(),
                next: t.name.clone(),
            });
        }
        let io = |source| GgufWriteError::Io {
            path: path.clone(),
            source,
        };
        self.file.flush().map_err(io)?;
        self.file.get_ref().sync_all().map_err(io)?;
        drop(self.file);
        self.out.commit().map_err(io)
    }
}

/// Serializes the header, computing each tensor's offset, and pads it to the alignment.
fn header(metadata: &[(String, Value)], tensors: &[(TensorDesc, u64)], alignment: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(GGUF_MAGIC);
    h.extend(VERSION.to_le_bytes());
    h.extend((tensors.len() as u64).to_le_bytes());
    h.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut h, k);
        h.extend((v.value_type() as u32).to_le_bytes());
        put_value(&mut h, v);
    }
    let mut offset = 0u64;
    for (t, size) in tensors {
        put_str(&mut h, &t.name);
        h.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            h.extend(d.to_le_bytes());
        }
        h.extend(t.ty.id().to_le_bytes());
        h.extend(offset.to_le_bytes());
        offset += size.next_multiple_of(alignment);
    }
    h.resize((h.len() as u64).next_multiple_of(alignment) as usize, 0);
    h
}

/// The alignment requested by `general.alignment` (a u32 power of two, as gguf.cpp insists), or
/// the default.
fn alignment(metadata: &[(String, Value)]) -> Result<u64, String> {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(*a as u64),
        Some((_, v)) => Err(format!("{v} is not a u32 power of two")),
    }
}

fn check_value(v: &Value) -> Result<(), String> {
    if let Value::Array(elem, items) = v {
        if *elem == ValueType::Array {
            return Err("nested arrays are not supported".into());
        }
        if let Some((i, e)) = items
            .iter()
            .enumerate()
            .find(|(_, e)| e.value_type() != *elem)
        {
            return Err(format!(
                "array of {elem:?} has element {i} of type {:?}",
                e.value_type()
            ));
        }
    }
    Ok(())
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend((s.len() as u64).to_le_bytes());
    h.extend(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.extend(x.to_le_bytes()),
        Value::U16(x) => h.extend(x.to_le_bytes()),
        Value::I16(x) => h.extend(x.to_le_bytes()),
        Value::U32(x) => h.extend(x.to_le_bytes()),
        Value::I32(x) => h.extend(x.to_le_bytes()),
        Value::F32(x) => h.extend(x.to_le_bytes()),
        Value::Bool(x) => h.push(*x as u8),
        Value::String(s) => put_str(h, s),
        Value::Array(elem, items) => {
            h.extend((*elem as u32).to_le_bytes());
            h.extend((items.len() as u64).to_le_bytes());
            for e in items {
                put_value(h, e);
            }
        }
        Value::U64(x) => h.extend(x.to_le_bytes()),
        Value::I64(x) => h.extend(x.to_le_bytes()),
        Value::F64(x) => h.extend(x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    fn every_value_type() -> Vec<(String, Value)> {
        let s = |x: &str| Value::String(x.into());
        vec![
            ("general.architecture".into(), s("llama")),
            ("t.u8".into(), Value::U8(200)),
            ("t.i8".into(), Value::I8(-100)),
            ("t.u16".into(), Value::U16(60000)),
            ("t.i16".into(), Value::I16(-30000)),
            ("t.u32".into(), Value::U32(4_000_000_000)),
            ("t.i32".into(), Value::I32(-2_000_000_000)),
            ("t.f32".into(), Value::F32(1.5e-7)),
            ("t.bool".into(), Value::Bool(true)),
            ("t.string".into(), s("héllo")),
            ("t.u64".into(), Value::U64(u64::MAX)),
            ("t.i64".into(), Value::I64(i64::MIN)),
            ("t.f64".into(), Value::F64(-2.5e300)),
            (
                "t.array.str".into(),
                Value::Array(ValueType::String, vec![s("a"), s(""), s("c d")]),
            ),
            (
                "t.array.f32".into(),
                Value::Array(ValueType::F32, vec![Value::F32(1.0), Value::F32(-0.0)]),
            ),
            ("t.array.empty".into(), Value::Array(ValueType::I32, vec![])),
            ("general.alignment".into(), Value::U32(64)),
        ]
    }

    fn tensors() -> Vec<(TensorDesc, Vec<u8>)> {
        let seq = |n: usize| (0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
        vec![
            (TensorDesc::new("a", vec![3], GgmlType::F32), seq(12)),
            (TensorDesc::new("b", vec![64, 2], GgmlType::Q4_0), seq(72)),
            (TensorDesc::new("c", vec![5, 1, 3], GgmlType::F16), seq(30)),
            (
                TensorDesc::new("d", vec![256, 1, 1, 2], GgmlType::Q6K),
                seq(420),
            ),
        ]
    }

    #[test]
    fn round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let meta = every_value_type();
        let ts = tensors();
        let mut w =
            GgufWriter::create(&path, &meta, ts.iter().map(|(t, _)| t.clone()).collect()).unwrap();
        assert!(!path.exists(), "nothing at the destination before finish");
        for (t, data) in &ts {
            w.write_tensor(&t.name, data).unwrap();
        }
        assert_eq!(w.finish().unwrap(), path);

        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 64);
        assert_eq!(g.metadata, meta);
        assert_eq!(g.data_offset % 64, 0);
        for (t, data) in &ts {
            let info = g.tensor(&t.name).unwrap();
            assert_eq!((&info.dims, info.ty), (&t.dims, t.ty));
            assert_eq!(info.offset % 64, 0);
            assert_eq!(g.tensor_data(info), &data[..], "{}", t.name);
        }
        let last = &g.tensors[3];
        assert_eq!(
            g.file_len(),
            g.data_offset + last.offset + 448,
            "padded last tensor"
        );
    }

    #[test]
    fn misuse_is_an_error_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let ts = tensors();
        let descs: Vec<TensorDesc> = ts.iter().map(|(t, _)| t.clone()).collect();

        let mut w = GgufWriter::create(&path, &[], descs.clone()).unwrap();
        let e = w.write_tensor("b", &ts[1].1).unwrap_err();
        assert!(matches!(e, GgufWriteError::OutOfOrder { .. }), "{e}");
        let e = w.write_tensor("a", &[0; 11]).unwrap_err();
        assert!(e.to_string().contains("tensor a: 11 data bytes"), "{e}");
        w.write_tensor("a", &ts[0].1).unwrap();
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("1 of 4 tensors"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        drop(GgufWriter::create(&path, &[], descs).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn invalid_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let err = |meta: &[(String, Value)], t: TensorDesc| {
            GgufWriter::create(&path, meta, vec![t])
                .err()
                .unwrap()
                .to_string()
        };
        let ok = TensorDesc::new("w", vec![32], GgmlType::Q8_0);
        let e = err(&[], TensorDesc::new("w", vec![48], GgmlType::Q8_0));
        assert!(e.contains("tensor w") && e.contains("block size 32"), "{e}");
        let e = err(&[], TensorDesc::new("x".repeat(64), vec![1], GgmlType::F32));
        assert!(e.contains("64 bytes"), "{e}");
        let e = err(&[], TensorDesc::new("w", vec![2, 0], GgmlType::F32));
        assert!(e.contains("non-zero"), "{e}");
        let mixed = Value::Array(ValueType::U32, vec![Value::U32(1), Value::I32(2)]);
        let e = err(&[("k".into(), mixed)], ok.clone());
        assert!(e.contains("metadata k") && e.contains("element 1"), "{e}");
        let e = err(&[("general.alignment".into(), Value::U32(48))], ok);
        assert!(e.contains("general.alignment"), "{e}");
    }
}
