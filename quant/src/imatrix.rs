//! Importance matrices in llama.cpp's two file formats: the legacy `.dat` written by llama-imatrix
//! until mid 2025, and the GGUF format that replaced it (`general.type = "imatrix"`, tensors
//! `<name>.in_sum2` and `<name>.counts`). Both load into the same statistics, from which
//! `importance` derives the per-column vectors exactly as llama-quantize does for that format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ggml::GgmlType;
use crate::gguf::{GgufError, GgufFile, GgufWriteError, GgufWriter, TensorDesc, Value, ValueType};

const SUMS_SUFFIX: &str = ".in_sum2";
const COUNTS_SUFFIX: &str = ".counts";

#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
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
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
}

/// Which file an importance matrix came from; the two differ in how a zero count is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    Legacy,
    Gguf,
}

/// Activation statistics of one weight tensor's input columns.
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    /// Σx² per input column, `counts.len()` consecutive runs (one per expert matrix).
    pub in_sum2: Vec<f32>,
    /// Activation rows accumulated per matrix. The legacy format stores one count for all
    /// matrices, and it counts calls (chunks) rather than rows, with `in_sum2` scaled to match.
    pub counts: Vec<f32>,
}

impl ImatrixEntry {
    pub fn n_mat(&self) -> usize {
        self.counts.len()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    pub format: ImatrixFormat,
    /// Keyed by weight tensor name (e.g. `blk.0.attn_q.weight`).
    pub entries: BTreeMap<String, ImatrixEntry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    /// Tokens per chunk; the legacy format does not record it (0).
    pub chunk_size: u32,
}

impl Imatrix {
    /// Reads either format, telling them apart by the GGUF magic.
    pub fn read(path: impl AsRef<Path>) -> Result<Imatrix, ImatrixError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ImatrixError::Io {
            path: path.to_owned(),
            source,
        })?;
        if bytes.starts_with(crate::gguf::reader::GGUF_MAGIC) {
            Self::read_gguf(path)
        } else {
            Self::parse_legacy(path, &bytes)
        }
    }

    /// The importance vector llama-quantize uses for tensor `name`: per matrix, `in_sum2 / count`.
    /// A matrix that saw no input gets all ones (GGUF) or its raw sums (legacy), as llama.cpp does.
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let n_mat = e.n_mat().max(1);
        let n_cols = e.in_sum2.len() / n_mat;
        let mut out = e.in_sum2.clone();
        for (run, &count) in out.chunks_mut(n_cols.max(1)).zip(e.counts.iter().cycle()) {
            if count > 0.0 {
                run.iter_mut().for_each(|v| *v /= count);
            } else if self.format == ImatrixFormat::Gguf {
                run.fill(1.0);
            }
        }
        Some(out)
    }

    /// Keeps only entries whose name contains one of `include` (when non-empty) and none of
    /// `exclude` (llama-quantize's --include-weights / --exclude-weights).
    pub fn filter(&mut self, include: &[String], exclude: &[String]) {
        self.entries.retain(|name, _| {
            (include.is_empty() || include.iter().any(|p| name.contains(p.as_str())))
                && !exclude.iter().any(|p| name.contains(p.as_str()))
        });
    }

    fn parse_legacy(path: &Path, bytes: &[u8]) -> Result<Imatrix, ImatrixError> {
        let mut r = LegacyReader {
            path,
            bytes,
            pos: 0,
        };
        let n_entries = r.i32("entry count")?;
        if n_entries < 1 {
            return Err(r.invalid(
                "entry count",
                format!("{n_entries}: the file holds no data"),
            ));
        }
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let what = format!("entry #{i}");
            let len = r.len(&format!("{what} name length"))?;
            let name = String::from_utf8(r.take(len, &format!("{what} name"))?.to_vec())
                .map_err(|_| r.invalid(&format!("{what} name"), "not valid UTF-8".into()))?;
            let what = format!("entry {name}");
            let ncall = r.i32(&format!("{what} call count"))?;
            let nval = r.i32(&format!("{what} value count"))?;
            if nval < 1 {
                let msg = format!("{nval} values");
                return Err(r.invalid(&format!("{what} value count"), msg));
            }
            let raw = r.take(nval as usize * 4, &format!("{what} values"))?;
            let in_sum2 = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let counts = vec![ncall as f32];
            // a repeated name replaces the earlier entry, as in llama.cpp's loader
            entries.insert(name, ImatrixEntry { in_sum2, counts });
        }
        let (mut chunk_count, mut datasets) = (0, Vec::new());
        if r.pos < bytes.len() {
            chunk_count = r.i32("trailer chunk count")?.max(0) as u32;
            let len = r.len("trailer dataset name length")?;
            let name = r.take(len, "trailer dataset name")?;
            datasets.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(Imatrix {
            format: ImatrixFormat::Legacy,
            entries,
            datasets,
            chunk_count,
            chunk_size: 0,
        })
    }

    fn read_gguf(path: &Path) -> Result<Imatrix, ImatrixError> {
        let g = GgufFile::open(path)?;
        let invalid = |field: &str, msg: String| ImatrixError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            msg,
        };
        let required = |key: &str| {
            g.get(key)
                .ok_or_else(|| invalid(&format!("metadata {key}"), "missing".into()))
        };
        let datasets = required("imatrix.datasets")?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
            .ok_or_else(|| {
                invalid(
                    "metadata imatrix.datasets",
                    "not an array of strings".into(),
                )
            })?;
        let int = |key: &str| -> Result<u32, ImatrixError> {
            let v = required(key)?;
            v.as_i64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| invalid(&format!("metadata {key}"), format!("{v} is not a u32")))
        };
        let chunk_count = int("imatrix.chunk_count")?;
        let chunk_size = int("imatrix.chunk_size")?;

        let mut sums = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for t in &g.tensors {
            let (map, base) = if let Some(b) = t.name.strip_suffix(SUMS_SUFFIX) {
                (&mut sums, b)
            } else if let Some(b) = t.name.strip_suffix(COUNTS_SUFFIX) {
                (&mut counts, b)
            } else {
                continue;
            };
            if t.ty != GgmlType::F32 {
                return Err(invalid(
                    &format!("tensor {}", t.name),
                    format!("type {} (F32 expected)", t.ty),
                ));
            }
            let n_mat = t.dims[1..].iter().product::<u64>() as usize;
            let values = g
                .tensor_data(t)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<f32>>();
            map.insert(base.to_owned(), (n_mat, values));
        }
        let mut entries = BTreeMap::new();
        for (name, (n_mat, in_sum2)) in sums {
            let Some((_, c)) = counts.remove(&name) else {
                let msg = "has no matching .counts tensor".into();
                return Err(invalid(&format!("tensor {name}{SUMS_SUFFIX}"), msg));
            };
            if c.len() != n_mat {
                let msg = format!("{} counts for {n_mat} matrices of sums", c.len());
                return Err(invalid(&format!("tensor {name}{COUNTS_SUFFIX}"), msg));
            }
            entries.insert(name, ImatrixEntry { in_sum2, counts: c });
        }
        if let Some(name) = counts.keys().next() {
            let msg = "has no matching .in_sum2 tensor".into();
            return Err(invalid(&format!("tensor {name}{COUNTS_SUFFIX}"), msg));
        }
        if entries.is_empty() {
            return Err(invalid(
                "tensors",
                "the file holds no importance data".into(),
            ));
        }
        Ok(Imatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets,
            chunk_count,
            chunk_size,
        })
    }

    /// Writes the GGUF format. An entry read from a legacy file keeps its values and call count
    /// as sums and count, so reading the result back gives bit-identical importance vectors.
    pub fn write_gguf(&self, path: impl AsRef<Path>) -> Result<PathBuf, ImatrixError> {
        let path = path.as_ref();
        let strings = self
            .datasets
            .iter()
            .map(|d| Value::String(d.clone()))
            .collect();
        let metadata = vec![
            ("general.type".to_owned(), Value::String("imatrix".into())),
            (
                "imatrix.datasets".to_owned(),
                Value::Array(ValueType::String, strings),
            ),
            (
                "imatrix.chunk_count".to_owned(),
                Value::U32(self.chunk_count),
            ),
            ("imatrix.chunk_size".to_owned(), Value::U32(self.chunk_size)),
        ];
        let mut descs = Vec::with_capacity(2 * self.entries.len());
        for (name, e) in &self.entries {
            let n_mat = e.n_mat();
            if n_mat == 0 || e.in_sum2.is_empty() || e.in_sum2.len() % n_mat != 0 {
                let msg = format!(
                    "{} sums do not split into {n_mat} matrices",
                    e.in_sum2.len()
                );
                return Err(ImatrixError::Invalid {
                    path: path.to_owned(),
                    field: format!("entry {name}"),
                    msg,
                });
            }
            let n_cols = (e.in_sum2.len() / n_mat) as u64;
            let n_mat = n_mat as u64;
            descs.push(TensorDesc::new(
                format!("{name}{SUMS_SUFFIX}"),
                vec![n_cols, n_mat],
                GgmlType::F32,
            ));
            descs.push(TensorDesc::new(
                format!("{name}{COUNTS_SUFFIX}"),
                vec![1, n_mat],
                GgmlType::F32,
            ));
        }
        let mut w = GgufWriter::create(path, &metadata, descs)?;
        for (name, e) in &self.entries {
            w.write_tensor(
                &format!("{name}{SUMS_SUFFIX}"),
                bytemuck::cast_slice(&e.in_sum2),
            )?;
            w.write_tensor(
                &format!("{name}{COUNTS_SUFFIX}"),
                bytemuck::cast_slice(&e.counts),
            )?;
        }
        Ok(w.finish()?)
    }
}

impl Imatrix {
    /// Writes llama-imatrix's legacy .dat format (the one llama-quantize c392e50 reads). Entries
    /// are stored as llama-imatrix stores them, `(Σx² / rows) · ncall` with one call per chunk;
    /// entries read from a legacy file are written back unchanged. Entries with a matrix that saw
    /// no input are left out, as llama-imatrix does; their names are returned.
    pub fn write_legacy(&self, path: impl AsRef<Path>) -> Result<Vec<String>, ImatrixError> {
        let path = path.as_ref();
        let invalid = |field: &str, msg: String| ImatrixError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            msg,
        };
        let ncall = match self.format {
            ImatrixFormat::Legacy => None,
            ImatrixFormat::Gguf if self.chunk_count > 0 => Some(self.chunk_count as f32),
            ImatrixFormat::Gguf => {
                return Err(invalid(
                    "chunk count",
                    "0: the legacy format needs the number of chunks".into(),
                ))
            }
        };
        let len32 = |field: &str, n: usize| {
            i32::try_from(n)
                .map_err(|_| invalid(field, format!("{n} does not fit the format's 32-bit field")))
        };
        let mut body = Vec::new();
        let mut skipped = Vec::new();
        let mut n_entries = 0;
        for (name, e) in &self.entries {
            let n_mat = e.n_mat().max(1);
            let n_cols = e.in_sum2.len() / n_mat;
            if e.counts.iter().any(|&c| c <= 0.0) {
                skipped.push(name.clone());
                continue;
            }
            let (calls, values): (f32, Vec<f32>) = match ncall {
                None => (e.counts[0], e.in_sum2.clone()),
                Some(calls) => {
                    let v = e
                        .in_sum2
                        .chunks(n_cols.max(1))
                        .zip(&e.counts)
                        .flat_map(|(run, &rows)| run.iter().map(move |s| s / rows * calls))
                        .collect();
                    (calls, v)
                }
            };
            n_entries += 1;
            body.extend(len32("entry name", name.len())?.to_le_bytes());
            body.extend(name.as_bytes());
            body.extend((calls as i32).to_le_bytes());
            body.extend(len32("entry value count", values.len())?.to_le_bytes());
            values.iter().for_each(|v| body.extend(v.to_le_bytes()));
        }
        if n_entries == 0 {
            return Err(invalid("entries", "none with data to write".into()));
        }
        let mut bytes = len32("entry count", n_entries)?.to_le_bytes().to_vec();
        bytes.extend(body);
        bytes.extend(len32("chunk count", self.chunk_count as usize)?.to_le_bytes());
        let dataset = self.datasets.first().map_or("", String::as_str);
        bytes.extend(len32("dataset name", dataset.len())?.to_le_bytes());
        bytes.extend(dataset.as_bytes());
        let io = |source| ImatrixError::Io {
            path: path.to_owned(),
            source,
        };
        let out = crate::atomic::AtomicOutput::file(path).map_err(io)?;
        std::fs::write(out.path(), &bytes).map_err(io)?;
        out.commit().map_err(io)?;
        Ok(skipped)
    }
}

struct LegacyReader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> LegacyReader<'a> {
    fn invalid(&self, field: &str, msg: String) -> ImatrixError {
        ImatrixError::Invalid {
            path: self.path.to_owned(),
            field: field.to_owned(),
            msg,
        }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], ImatrixError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            let msg = format!(
                "file ends after {} bytes, {n} more needed at byte {}",
                self.bytes.len(),
                self.pos
            );
            return Err(self.invalid(field, msg));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i32(&mut self, field: &str) -> Result<i32, ImatrixError> {
        Ok(i32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }

    /// A non-negative length.
    fn len(&mut self, field: &str) -> Result<usize, ImatrixError> {
        let n = self.i32(field)?;
        usize::try_from(n).map_err(|_| self.invalid(field, format!("negative length {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy file built from the format description: entries (name, ncall, values) and an
    /// optional trailer (chunk count, dataset).
    fn legacy_bytes(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, ncall, values) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((values.len() as i32).to_le_bytes());
            values.iter().for_each(|v| b.extend(v.to_le_bytes()));
        }
        if let Some((chunks, ds)) = trailer {
            b.extend(chunks.to_le_bytes());
            b.extend((ds.len() as i32).to_le_bytes());
            b.extend(ds.as_bytes());
        }
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    const SUMS: [f32; 4] = [3.0, 1.0, 0.1, 7.5];

    #[test]
    fn legacy_writing_keeps_the_importance_and_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |sums: &[f32], counts: &[f32]| ImatrixEntry {
            in_sum2: sums.to_vec(),
            counts: counts.to_vec(),
        };
        let mut entries = BTreeMap::new();
        entries.insert("blk.0.ffn_up.weight".to_owned(), entry(&SUMS, &[512.0]));
        // two experts seen by different numbers of rows
        entries.insert(
            "blk.0.ffn_up_exps.weight".to_owned(),
            entry(&SUMS, &[4.0, 2.0]),
        );
        entries.insert(
            "blk.1.ffn_up_exps.weight".to_owned(),
            entry(&SUMS, &[4.0, 0.0]),
        );
        let im = Imatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets: vec!["calib.txt".into()],
            chunk_count: 3,
            chunk_size: 512,
        };
        let path = dir.path().join("out.dat");
        let skipped = im.write_legacy(&path).unwrap();
        assert_eq!(skipped, ["blk.1.ffn_up_exps.weight"]);
        // byte layout as the format description has it
        let s = |v: &[f32], r: f32| v.iter().map(|x| x / r * 3.0).collect::<Vec<f32>>();
        let want = legacy_bytes(
            &[
                ("blk.0.ffn_up.weight", 3, &s(&SUMS, 512.0)),
                (
                    "blk.0.ffn_up_exps.weight",
                    3,
                    &[s(&SUMS[..2], 4.0), s(&SUMS[2..], 2.0)].concat(),
                ),
            ],
            Some((3, "calib.txt")),
        );
        assert_eq!(std::fs::read(&path).unwrap(), want);
        let back = Imatrix::read(&path).unwrap();
        for (name, e) in &im.entries {
            let Some(got) = back.importance(name) else {
                continue;
            };
            let want = im.importance(name).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6 * b.abs(), "{name}: {a} vs {b}");
            }
            assert_eq!(e.n_mat(), if name.contains("exps") { 2 } else { 1 });
        }
        // a legacy file is written back byte for byte
        let path2 = dir.path().join("again.dat");
        back.write_legacy(&path2).unwrap();
        assert_eq!(std::fs::read(&path2).unwrap(), want);
    }

    #[test]
    fn reads_legacy_and_divides_by_calls() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = legacy_bytes(
            &[
                ("blk.0.attn_q.weight", 3, &SUMS),
                ("blk.0.ffn_up.weight", 0, &SUMS[..2]),
            ],
            Some((10, "wiki.train.raw")),
        );
        let im = Imatrix::read(write(dir.path(), "a.dat", &bytes)).unwrap();
        assert_eq!(im.format, ImatrixFormat::Legacy);
        assert_eq!(
            (im.chunk_count, &im.datasets[..]),
            (10, &["wiki.train.raw".to_owned()][..])
        );
        let want: Vec<f32> = SUMS.iter().map(|v| v / 3.0).collect();
        assert_eq!(im.importance("blk.0.attn_q.weight").unwrap(), want);
        // llama-quantize keeps the raw values of an entry that was never called
        assert_eq!(im.importance("blk.0.ffn_up.weight").unwrap(), &SUMS[..2]);
        assert_eq!(im.importance("output.weight"), None);
    }

    #[test]
    fn legacy_truncation_is_an_error_naming_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let entries: [(&str, i32, &[f32]); 2] = [("w.a", 1, &SUMS), ("w.b", 2, &SUMS)];
        let full = legacy_bytes(&entries, Some((4, "data")));
        let no_trailer = legacy_bytes(&entries, None).len();
        for n in 0..full.len() {
            let path = write(dir.path(), "t.dat", &full[..n]);
            let r = Imatrix::read(&path);
            if n == no_trailer {
                assert!(r.is_ok(), "the trailer is optional");
                continue;
            }
            let e = r
                .err()
                .unwrap_or_else(|| panic!("prefix of {n} bytes accepted"))
                .to_string();
            assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
        let path = write(dir.path(), "t.dat", &full[..30]);
        let e = Imatrix::read(&path).unwrap_err().to_string();
        assert!(e.contains("entry w.a values"), "{e}");
        let bad = legacy_bytes(&[("w.a", 1, &[])], None);
        let e = Imatrix::read(write(dir.path(), "e.dat", &bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry w.a value count: 0 values"), "{e}");
    }

    #[test]
    fn gguf_round_trip_keeps_importance_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = legacy_bytes(
            &[
                ("blk.0.attn_q.weight", 3, &SUMS),
                ("blk.1.attn_k.weight", 7, &SUMS),
            ],
            Some((12, "calib.txt")),
        );
        let legacy = Imatrix::read(write(dir.path(), "a.dat", &bytes)).unwrap();
        let path = legacy.write_gguf(dir.path().join("a.gguf")).unwrap();
        let back = Imatrix::read(&path).unwrap();
        assert_eq!(back.format, ImatrixFormat::Gguf);
        assert_eq!((back.chunk_count, &back.datasets), (12, &legacy.datasets));
        for name in legacy.entries.keys() {
            let (a, b) = (
                legacy.importance(name).unwrap(),
                back.importance(name).unwrap(),
            );
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        // and the file is what llama.cpp's loader looks for
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.req_str("general.type").unwrap(), "imatrix");
        let sums = g.tensor("blk.0.attn_q.weight.in_sum2").unwrap();
        assert_eq!((sums.dims.clone(), sums.ty), (vec![4, 1], GgmlType::F32));
        let counts = g.tensor("blk.0.attn_q.weight.counts").unwrap();
        assert_eq!(counts.dims, vec![1, 1]);
    }

    #[test]
    fn gguf_experts_divide_by_their_own_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut im = Imatrix {
            format: ImatrixFormat::Gguf,
            entries: BTreeMap::new(),
            datasets: vec!["d".into()],
            chunk_count: 2,
            chunk_size: 512,
        };
        let entry = ImatrixEntry {
            in_sum2: vec![2.0, 4.0, 6.0, 8.0, 1.0, 1.0],
            counts: vec![2.0, 0.0, 4.0],
        };
        im.entries.insert("blk.0.ffn_up_exps.weight".into(), entry);
        let back = Imatrix::read(im.write_gguf(dir.path().join("m.gguf")).unwrap()).unwrap();
        assert_eq!(back, im);
        // an expert that saw no tokens gets ones, as in llama-quantize
        assert_eq!(
            back.importance("blk.0.ffn_up_exps.weight").unwrap(),
            [1.0, 2.0, 1.0, 1.0, 0.25, 0.25]
        );
    }

    #[test]
    fn gguf_errors_name_the_file_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        let meta = |keys: &[&str]| -> Vec<(String, Value)> {
            let all = [
                ("imatrix.datasets", Value::Array(ValueType::String, vec![])),
                ("imatrix.chunk_count", Value::U32(1)),
                ("imatrix.chunk_size", Value::U32(512)),
            ];
            all.into_iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        };
        let write = |meta: Vec<(String, Value)>, tensors: &[(&str, Vec<u64>)]| {
            let descs = tensors
                .iter()
                .map(|(n, d)| TensorDesc::new(*n, d.clone(), GgmlType::F32))
                .collect::<Vec<_>>();
            let mut w = GgufWriter::create(&path, &meta, descs.clone()).unwrap();
            for d in descs {
                w.write_tensor(&d.name, &vec![0; d.n_bytes().unwrap() as usize])
                    .unwrap();
            }
            w.finish().unwrap();
            Imatrix::read(&path).unwrap_err().to_string()
        };
        let all = [
            "imatrix.datasets",
            "imatrix.chunk_count",
            "imatrix.chunk_size",
        ];
        let e = write(meta(&all), &[("w.in_sum2", vec![4, 2])]);
        assert!(
            e.contains("bad.gguf") && e.contains("tensor w.in_sum2: has no matching .counts"),
            "{e}"
        );
        let e = write(
            meta(&all),
            &[("w.in_sum2", vec![4, 2]), ("w.counts", vec![1, 3])],
        );
        assert!(
            e.contains("tensor w.counts: 3 counts for 2 matrices"),
            "{e}"
        );
        let e = write(
            meta(&all[1..]),
            &[("w.in_sum2", vec![4]), ("w.counts", vec![1])],
        );
        assert!(e.contains("metadata imatrix.datasets: missing"), "{e}");
        let e = write(meta(&all), &[]);
        assert!(e.contains("no importance data"), "{e}");
    }

    #[test]
    fn include_and_exclude_match_substrings() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "blk.0.attn_q.weight",
            "blk.0.ffn_up.weight",
            "blk.1.ffn_up.weight",
        ];
        let entries: Vec<(&str, i32, &[f32])> = names.iter().map(|n| (*n, 1, &SUMS[..])).collect();
        let path = write(dir.path(), "a.dat", &legacy_bytes(&entries, None));
        let mut im = Imatrix::read(&path).unwrap();
        im.filter(&[], &["blk.1.".into()]);
        assert_eq!(im.entries.keys().collect::<Vec<_>>(), &names[..2]);
        im.filter(&["ffn".into()], &[]);
        assert_eq!(im.entries.keys().collect::<Vec<_>>(), &names[1..2]);
    }
}
