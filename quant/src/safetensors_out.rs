//! Streaming safetensors writer: the header is computed from the tensor list up front, then each
//! tensor's bytes are written in order, so a converter holds one tensor at a time, never the model.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// safetensors element types this project writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F8E4M3,
    I64,
    I32,
    I16,
    I8,
    U8,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::F8E4M3 | Dtype::I8 | Dtype::U8 => 1,
            Dtype::I64 => 8,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }

    pub fn n_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

pub struct SafetensorsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    specs: Vec<TensorSpec>,
    next: usize,
}

impl SafetensorsWriter {
    /// Writes the header for `specs` (in this order) and `metadata` (the `__metadata__` map).
    pub fn create(
        path: impl AsRef<Path>,
        specs: Vec<TensorSpec>,
        metadata: &BTreeMap<String, String>,
    ) -> io::Result<SafetensorsWriter> {
        let path = path.as_ref().to_owned();
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = specs.iter().find(|s| !names.insert(s.name.as_str())) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: tensor {} listed twice", path.display(), dup.name),
            ));
        }
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
        }
        let mut offset = 0usize;
        for s in &specs {
            let end = offset + s.n_bytes();
            header.insert(
                s.name.clone(),
                serde_json::json!({"dtype": s.dtype.name(), "shape": s.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header))?;
        // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
        while (8 + json.len()) % 8 != 0 {
            json.push(b' ');
        }
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        out.write_all(&(json.len() as u64).to_le_bytes())?;
        out.write_all(&json)?;
        Ok(SafetensorsWriter {
            path,
            out,
            specs,
            next: 0,
        })
    }

    /// Writes the next tensor's data; name and size must match the spec list.
    pub fn write(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let bad = |msg: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {msg}", self.path.display()),
            )
        };
        let spec = self
            .specs
            .get(self.next)
            .ok_or_else(|| bad(format!("tensor {name} written after all tensors")))?;
        if spec.name != name {
            return Err(bad(format!(
                "tensor {name} written where {} was due",
                spec.name
            )));
        }
        if spec.n_bytes() != data.len() {
            return Err(bad(format!(
                "tensor {name}: {} bytes written, shape {:?} of {} needs {}",
                data.len(),
                spec.shape,
                spec.dtype.name(),
                spec.n_bytes()
            )));
        }
        self.out.write_all(data)?;
        self.next += 1;
        Ok(())
    }

    /// Flushes and syncs; fails if any tensor was not written.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some(missing) = self.specs.get(self.next) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: tensor {} was never written",
                    self.path.display(),
                    missing.name
                ),
            ));
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

/// A model's tensors written as one `model.safetensors`, or as shards of at most `max_shard_bytes`
/// (`model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`), the layout
/// transformers and vLLM read. Tensors are written in spec order, one at a time.
pub struct ShardedWriter {
    dir: PathBuf,
    shards: Vec<(String, Vec<TensorSpec>)>,
    current: Option<SafetensorsWriter>,
    shard: usize,
    left_in_shard: usize,
    metadata: BTreeMap<String, String>,
}

impl ShardedWriter {
    pub fn create(
        dir: impl AsRef<Path>,
        specs: Vec<TensorSpec>,
        max_shard_bytes: usize,
        metadata: BTreeMap<String, String>,
    ) -> io::Result<ShardedWriter> {
        let dir = dir.as_ref().to_owned();
        let mut groups: Vec<Vec<TensorSpec>> = vec![vec![]];
        let mut size = 0;
        for s in specs {
            let n = s.n_bytes();
            if size > 0 && size + n > max_shard_bytes {
                groups.push(vec![]);
                size = 0;
            }
            size += n;
            groups.last_mut().unwrap().push(s);
        }
        let count = groups.len();
        let shards: Vec<(String, Vec<TensorSpec>)> = groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let name = if count == 1 {
                    "model.safetensors".to_string()
                } else {
                    format!("model-{:05}-of-{count:05}.safetensors", i + 1)
                };
                (name, g)
            })
            .collect();
        if count > 1 {
            let total: usize = shards
                .iter()
                .flat_map(|(_, g)| g.iter().map(TensorSpec::n_bytes))
                .sum();
            let weight_map: BTreeMap<&str, &str> = shards
                .iter()
                .flat_map(|(f, g)| g.iter().map(move |s| (s.name.as_str(), f.as_str())))
                .collect();
            let index =
                serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            std::fs::write(
                dir.join("model.safetensors.index.json"),
                serde_json::to_string_pretty(&index)? + "\n",
            )?;
        }
        Ok(ShardedWriter {
            dir,
            shards,
            current: None,
            shard: 0,
            left_in_shard: 0,
            metadata,
        })
    }

    /// Writes the next tensor (in spec order).
    pub fn write(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        if self.left_in_shard == 0 {
            if let Some(w) = self.current.take() {
                w.finish()?;
                self.shard += 1;
            }
            let (file, specs) = self.shards.get(self.shard).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("tensor {name} written after all tensors"),
                )
            })?;
            self.left_in_shard = specs.len();
            self.current = Some(SafetensorsWriter::create(
                self.dir.join(file),
                specs.clone(),
                &self.metadata,
            )?);
        }
        self.current
            .as_mut()
            .expect("opened above")
            .write(name, data)?;
        self.left_in_shard -= 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<()> {
        let last_shard_open = self.shard + 1 == self.shards.len() && self.current.is_some();
        if !last_shard_open || self.left_in_shard > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not every tensor was written", self.dir.display()),
            ));
        }
        self.current.take().expect("checked above").finish()
    }
}

/// Little-endian bytes of a slice of plain numbers.
pub fn le_bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    // Every platform this project targets is little-endian, as the format is.
    const _: () = assert!(cfg!(target_endian = "little"));
    bytemuck::cast_slice(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_the_format_spec_describes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let specs = vec![
            TensorSpec::new("a", Dtype::F32, vec![2, 3]),
            TensorSpec::new("b", Dtype::I8, vec![5]),
        ];
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut w = SafetensorsWriter::create(&p, specs, &meta).unwrap();
        let a: Vec<f32> = (0..6).map(|i| i as f32).collect();
        w.write("a", le_bytes(&a)).unwrap();
        assert!(w.write("a", &[0; 5]).is_err());
        w.write("b", &[1, 2, 3, 4, 5]).unwrap();
        w.finish().unwrap();

        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + n) % 8, 0);
        let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(h["a"]["data_offsets"], serde_json::json!([0, 24]));
        assert_eq!(h["b"]["dtype"], "I8");
        assert_eq!(h["__metadata__"]["format"], "pt");
        assert_eq!(&bytes[8 + n + 24..], &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn shards_split_by_size_with_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let specs: Vec<TensorSpec> = (0..5)
            .map(|i| TensorSpec::new(format!("t{i}"), Dtype::F32, vec![10]))
            .collect();
        let mut w = ShardedWriter::create(dir.path(), specs, 100, BTreeMap::new()).unwrap();
        for i in 0..5 {
            w.write(&format!("t{i}"), &[0u8; 40]).unwrap();
        }
        w.finish().unwrap();
        let index: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            index["weight_map"]["t0"],
            "model-00001-of-00003.safetensors"
        );
        assert_eq!(
            index["weight_map"]["t4"],
            "model-00003-of-00003.safetensors"
        );
        assert_eq!(index["metadata"]["total_size"], 200);
        assert!(dir.path().join("model-00003-of-00003.safetensors").exists());

        let dir = tempfile::tempdir().unwrap();
        let specs = vec![
            TensorSpec::new("a", Dtype::U8, vec![3]),
            TensorSpec::new("b", Dtype::U8, vec![3]),
        ];
        let mut w = ShardedWriter::create(dir.path(), specs, 1 << 30, BTreeMap::new()).unwrap();
        w.write("a", &[1, 2, 3]).unwrap();
        assert!(w.finish().is_err(), "unwritten tensor b accepted");
    }

    #[test]
    fn unfinished_writes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let w = SafetensorsWriter::create(
            &p,
            vec![TensorSpec::new("a", Dtype::U8, vec![1])],
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(w.finish().is_err());
    }
}
