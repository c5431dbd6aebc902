//! Whole-model GGUF quantization, byte-compatible with llama-quantize: the same tensor order,
//! per-tensor types (see `ggml::mix`), tensor bytes and metadata keys. The input stays memory
//! mapped; each tensor is converted row by row in parallel and streamed to the output, which is
//! renamed into place only once complete.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::reader::{GgufError, GgufFile};
use super::source::TensorSource;
use super::value::Value;
use super::writer::{GgufWriteError, GgufWriter, TensorDesc};
use crate::ggml::mix::{processing_order, MixError, MixOptions, MixPlanner, ModelFacts};
use crate::ggml::quantize::first_non_finite;
use crate::ggml::{dequantize_row, quantize_row, CodecError, GgmlType, QuantizeError};
use crate::imatrix::Imatrix;

/// ggml's GGML_QNT_VERSION.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Keys of a split model, which a single output file must not carry.
const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

#[derive(Debug, thiserror::Error)]
pub enum QuantizeModelError {
    #[error(transparent)]
    Read(#[from] GgufError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    // The variants below carry their cause in the message (the cause is the detail worth
    // reading), so it is not also reported as an error source.
    #[error("{path}: {error}")]
    Mix { path: PathBuf, error: MixError },
    #[error(
        "{path}: tensor {name} is already {ty}; requantizing loses quality, allow it explicitly (--allow-requantize)"
    )]
    Requantize {
        path: PathBuf,
        name: String,
        ty: GgmlType,
    },
    #[error("{path}: tensor {name}: cannot read {ty} data: {error}")]
    Decode {
        path: PathBuf,
        name: String,
        ty: GgmlType,
        error: CodecError,
    },
    #[error("{path}: tensor {name}: {error}")]
    Encode {
        path: PathBuf,
        name: String,
        error: QuantizeError,
    },
    #[error("{path}: tensor {name}: the {ty} result holds a non-finite value (block {block})")]
    NonFinite {
        path: PathBuf,
        name: String,
        ty: GgmlType,
        block: usize,
    },
    #[error("importance matrix {path} does not fit the model {model}:\n  {}", problems.join("\n  "))]
    ImatrixMismatch {
        path: PathBuf,
        model: PathBuf,
        problems: Vec<String>,
    },
    #[error("importance matrix {path}: entry {name} holds the non-finite value {value}")]
    ImatrixNonFinite {
        path: PathBuf,
        name: String,
        value: f32,
    },
}

/// An importance matrix and the file it came from (recorded in the output's metadata).
pub struct ImatrixSource<'a> {
    pub path: PathBuf,
    pub data: &'a Imatrix,
}

pub struct QuantizeParams<'a> {
    /// The file type and per-tensor overrides; `has_imatrix` is set from `imatrix`.
    pub mix: MixOptions,
    pub imatrix: Option<ImatrixSource<'a>>,
    pub allow_requantize: bool,
}

/// One tensor of the output, as it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    pub index: usize,
    pub total: usize,
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub used_imatrix: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeReport {
    pub output: PathBuf,
    pub tensors: Vec<TensorReport>,
    /// Tensors whose rows forced a fallback type, out of all the mix typed.
    pub n_fallback: usize,
    pub n_mixed: usize,
    /// Quantized tensors the importance matrix had no entry for (quantized without one).
    pub without_imatrix: Vec<String>,
}

/// A tensor's plan: its input description and output type.
struct Planned {
    /// Index into the source's tensors.
    index: usize,
    info: TensorDesc,
    to: GgmlType,
    imatrix: Option<Vec<f32>>,
}

impl Planned {
    fn converts(&self) -> bool {
        self.to != self.info.ty
    }

    fn row_len(&self) -> usize {
        self.info.dims[0] as usize
    }

    fn n_rows(&self) -> usize {
        self.info.dims[1..].iter().product::<u64>() as usize
    }
}

/// Quantizes the GGUF model at `input` into `output`, calling `on_tensor` after each tensor.
pub fn quantize_model(
    input: &Path,
    output: &Path,
    params: &QuantizeParams,
    on_tensor: impl FnMut(&TensorReport),
) -> Result<QuantizeReport, QuantizeModelError> {
    quantize_source(&GgufFile::open(input)?, output, params, on_tensor)
}

/// Quantizes the model `source` describes into the GGUF file `output`, tensor by tensor, calling
/// `on_tensor` after each.
pub fn quantize_source(
    source: &dyn TensorSource,
    output: &Path,
    params: &QuantizeParams,
    mut on_tensor: impl FnMut(&TensorReport),
) -> Result<QuantizeReport, QuantizeModelError> {
    let input = source.path();
    let mut tensors: Vec<(usize, TensorDesc)> = source.tensors().into_iter().enumerate().collect();
    let names = tensors.iter().map(|(_, t)| t.name.as_str());
    let facts = ModelFacts::from_metadata(input, source.metadata(), names)?;
    let mut opts = params.mix.clone();
    opts.has_imatrix = params.imatrix.is_some();
    let mut planner = MixPlanner::new(facts, opts);

    tensors.sort_by(|a, b| processing_order(&a.1.name, &b.1.name));
    let mut plan = Vec::with_capacity(tensors.len());
    for (index, info) in tensors {
        let to = planner
            .plan(&info.name, &info.dims, info.ty)
            .map_err(|error| QuantizeModelError::Mix {
                path: input.to_owned(),
                error,
            })?;
        plan.push(Planned {
            index,
            info,
            to,
            imatrix: None,
        });
    }
    for p in plan.iter().filter(|p| p.converts()) {
        if p.info.ty.is_quantized() && !params.allow_requantize {
            return Err(QuantizeModelError::Requantize {
                path: input.to_owned(),
                name: p.info.name.clone(),
                ty: p.info.ty,
            });
        }
    }
    let without_imatrix = match &params.imatrix {
        Some(im) => attach_imatrix(&mut plan, im, input)?,
        None => Vec::new(),
    };

    let metadata = output_metadata(source.metadata(), params);
    let descs = plan
        .iter()
        .map(|p| TensorDesc::new(p.info.name.clone(), p.info.dims.clone(), p.to))
        .collect();
    let mut writer = GgufWriter::create(output, &metadata, descs)?;
    let mut reports = Vec::with_capacity(plan.len());
    for (index, p) in plan.iter().enumerate() {
        let src = source.tensor_data(p.index);
        let converted;
        let data = if p.converts() {
            converted = convert(input, p, &src)?;
            &converted[..]
        } else {
            &src[..]
        };
        writer.write_tensor(&p.info.name, data)?;
        let report = TensorReport {
            index,
            total: plan.len(),
            name: p.info.name.clone(),
            dims: p.info.dims.clone(),
            from: p.info.ty,
            to: p.to,
            bytes_in: src.len() as u64,
            bytes_out: data.len() as u64,
            used_imatrix: p.imatrix.is_some(),
        };
        drop(src);
        source.release(p.index);
        on_tensor(&report);
        reports.push(report);
    }
    Ok(QuantizeReport {
        output: writer.finish()?,
        tensors: reports,
        n_fallback: planner.n_fallback,
        n_mixed: planner.n_k_quantized + planner.n_fallback,
        without_imatrix,
    })
}

/// Gives each converted tensor its importance vector, checking that the matrix fits the model
/// first: sizes must match (token_embd excepted, as llama-quantize ignores its entry), at least
/// one entry must name a model tensor, and every value must be finite. Returns the converted
/// tensors the matrix does not cover.
fn attach_imatrix(
    plan: &mut [Planned],
    im: &ImatrixSource,
    model_path: &Path,
) -> Result<Vec<String>, QuantizeModelError> {
    for name in im.data.entries.keys() {
        let values = im.data.importance(name).unwrap_or_default();
        if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
            return Err(QuantizeModelError::ImatrixNonFinite {
                path: im.path.clone(),
                name: name.clone(),
                value,
            });
        }
    }
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    let mut matched = 0;
    for p in plan.iter_mut().filter(|p| p.converts()) {
        let Some(values) = im.data.importance(&p.info.name) else {
            missing.push(p.info.name.clone());
            continue;
        };
        matched += 1;
        let ne2 = p.info.dims.get(2).copied().unwrap_or(1) as usize;
        let want = p.row_len() * ne2;
        if values.len() == want {
            p.imatrix = Some(values);
        } else if p.info.name != "token_embd.weight" {
            problems.push(format!(
                "{}: {} values, the tensor needs {want} ({} columns x {ne2} matrices)",
                p.info.name,
                values.len(),
                p.row_len()
            ));
        }
    }
    if matched == 0 && !im.data.entries.is_empty() {
        let some: Vec<&str> = im.data.entries.keys().take(5).map(String::as_str).collect();
        problems.push(format!(
            "none of its {} entries names a tensor being quantized (it has {}{})",
            im.data.entries.len(),
            some.join(", "),
            if im.data.entries.len() > 5 {
                ", ..."
            } else {
                ""
            }
        ));
    }
    if !problems.is_empty() {
        return Err(QuantizeModelError::ImatrixMismatch {
            path: im.path.clone(),
            model: model_path.to_owned(),
            problems,
        });
    }
    Ok(missing)
}

/// The input's metadata with llama-quantize's changes: quantization version and file type set
/// (moved to the end, as gguf's set does), split keys dropped, and the imatrix provenance keys.
fn output_metadata(source: &[(String, Value)], params: &QuantizeParams) -> Vec<(String, Value)> {
    let mut meta = source.to_vec();
    let mut set = |key: &str, v: Value| {
        meta.retain(|(k, _)| k != key);
        meta.push((key.to_owned(), v));
    };
    set(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    set("general.file_type", Value::U32(params.mix.ftype.id()));
    if let Some(im) = &params.imatrix {
        // llama-quantize passes these through fixed 128-byte override buffers
        let file = clip_127(&im.path.to_string_lossy());
        set("quantize.imatrix.file", Value::String(file));
        if let Some(ds) = im.data.datasets.first().filter(|d| !d.is_empty()) {
            set("quantize.imatrix.dataset", Value::String(clip_127(ds)));
        }
        set(
            "quantize.imatrix.entries_count",
            Value::I32(im.data.entries.len() as i32),
        );
        if im.data.chunk_count > 0 {
            set(
                "quantize.imatrix.chunks_count",
                Value::I32(im.data.chunk_count as i32),
            );
        }
    }
    meta.retain(|(k, _)| !SPLIT_KEYS.contains(&k.as_str()));
    meta
}

/// The longest prefix of `s` of at most 127 bytes that ends on a character boundary.
fn clip_127(s: &str) -> String {
    let mut end = s.len().min(127);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Rows per parallel task: at least 16k elements, as llama-quantize chunks its work.
fn rows_per_task(n_per_row: usize) -> usize {
    (16384 / n_per_row.max(1)).max(1)
}

/// Converts one tensor: each row decoded to f32 and encoded to the target type, rows in
/// parallel, each expert matrix with its own slice of the importance vector.
fn convert(path: &Path, p: &Planned, src: &[u8]) -> Result<Vec<u8>, QuantizeModelError> {
    let info = &p.info;
    let name = || info.name.clone();
    let n_per_row = p.row_len();
    let src_row = info.ty.row_bytes(n_per_row).unwrap_or(0);
    let dst_row =
        p.to.row_bytes(n_per_row)
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                let source = CodecError::RowNotBlockAligned {
                    ty: p.to,
                    n: n_per_row,
                    block: p.to.block_size(),
                };
                QuantizeModelError::Encode {
                    path: path.to_owned(),
                    name: name(),
                    error: source.into(),
                }
            })?;
    let ne1 = info.dims.get(1).copied().unwrap_or(1) as usize;
    let n_mat = p
        .imatrix
        .as_ref()
        .map_or(1, |m| m.len() / n_per_row.max(1))
        .max(1);
    let per_task = rows_per_task(n_per_row);

    let mut out = vec![0u8; dst_row * p.n_rows()];
    out.par_chunks_mut(dst_row * per_task)
        .enumerate()
        .try_for_each(|(task, chunk)| {
            let mut row = vec![0f32; n_per_row];
            for (k, dst) in chunk.chunks_exact_mut(dst_row).enumerate() {
                let r = task * per_task + k;
                dequantize_row(info.ty, &src[r * src_row..(r + 1) * src_row], &mut row).map_err(
                    |error| QuantizeModelError::Decode {
                        path: path.to_owned(),
                        name: name(),
                        ty: info.ty,
                        error,
                    },
                )?;
                let m = (r / ne1) % n_mat;
                let w = p
                    .imatrix
                    .as_ref()
                    .map(|v| &v[m * n_per_row..(m + 1) * n_per_row]);
                quantize_row(p.to, &row, dst, w).map_err(|error| QuantizeModelError::Encode {
                    path: path.to_owned(),
                    name: name(),
                    error,
                })?;
            }
            Ok::<(), QuantizeModelError>(())
        })?;
    if let Some(block) = first_non_finite(p.to, &out) {
        return Err(QuantizeModelError::NonFinite {
            path: path.to_owned(),
            name: name(),
            ty: p.to,
            block,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ggml::mix::LlamaFtype;
    use crate::imatrix::{ImatrixEntry, ImatrixFormat};

    /// A two-layer llama `width` wide with F16 weights `w(i)`, F32 norms, and (optionally) one Q4_0 tensor.
    fn tiny_model(dir: &Path, width: u64, with_q4_0: bool, w: impl Fn(usize) -> f32) -> PathBuf {
        let path = dir.join(format!("in-{width}-{with_q4_0}.gguf"));
        let meta = vec![
            (
                "general.architecture".to_owned(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_owned(), Value::U32(2)),
            ("llama.attention.head_count".to_owned(), Value::U32(4)),
            ("split.count".to_owned(), Value::U16(1)),
            ("general.file_type".to_owned(), Value::U32(1)),
        ];
        let mut descs = vec![
            TensorDesc::new("token_embd.weight", vec![width, 8], GgmlType::F16),
            TensorDesc::new("output_norm.weight", vec![width], GgmlType::F32),
        ];
        for l in 0..2 {
            let ty = if with_q4_0 && l == 1 {
                GgmlType::Q4_0
            } else {
                GgmlType::F16
            };
            descs.push(TensorDesc::new(
                format!("blk.{l}.attn_q.weight"),
                vec![width, 4],
                ty,
            ));
            descs.push(TensorDesc::new(
                format!("blk.{l}.attn_norm.weight"),
                vec![width],
                GgmlType::F32,
            ));
        }
        let mut out = GgufWriter::create(&path, &meta, descs.clone()).unwrap();
        for d in descs {
            let n = d.dims.iter().product::<u64>() as usize;
            let x: Vec<f32> = (0..n).map(&w).collect();
            let mut bytes = vec![0u8; d.n_bytes().unwrap() as usize];
            crate::ggml::quantize_rows(d.ty, &x, d.dims[0] as usize, &mut bytes, None).unwrap();
            out.write_tensor(&d.name, &bytes).unwrap();
        }
        out.finish().unwrap();
        path
    }

    fn wave(i: usize) -> f32 {
        ((i * 37 % 101) as f32 - 50.0) / 400.0
    }

    fn params(ftype: LlamaFtype) -> QuantizeParams<'static> {
        QuantizeParams {
            mix: MixOptions::new(ftype),
            imatrix: None,
            allow_requantize: false,
        }
    }

    fn imatrix(entries: &[(&str, usize)]) -> Imatrix {
        let entries = entries
            .iter()
            .map(|(n, len)| {
                let e = ImatrixEntry {
                    in_sum2: vec![1.0; *len],
                    counts: vec![1.0],
                };
                (n.to_string(), e)
            })
            .collect::<BTreeMap<_, _>>();
        Imatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets: vec!["calib.txt".into()],
            chunk_count: 3,
            chunk_size: 512,
        }
    }

    #[test]
    fn writes_metadata_order_and_reports_like_llama_quantize() {
        let dir = tempfile::tempdir().unwrap();
        let input = tiny_model(dir.path(), 256, false, wave);
        let out = dir.path().join("out.gguf");
        let im = imatrix(&[("blk.0.attn_q.weight", 256), ("blk.1.attn_q.weight", 256)]);
        let mut p = params(LlamaFtype::Q4KM);
        p.imatrix = Some(ImatrixSource {
            path: "calib.imatrix".into(),
            data: &im,
        });
        let mut seen = 0;
        let report = quantize_model(&input, &out, &p, |_| seen += 1).unwrap();
        assert_eq!(seen, 6);
        let g = GgufFile::open(&out).unwrap();
        let keys: Vec<&str> = g.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "llama.block_count",
                "llama.attention.head_count",
                "general.quantization_version",
                "general.file_type",
                "quantize.imatrix.file",
                "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count",
                "quantize.imatrix.chunks_count",
            ]
        );
        assert_eq!(g.get("general.file_type"), Some(&Value::U32(15)));
        assert_eq!(
            g.get("quantize.imatrix.entries_count"),
            Some(&Value::I32(2))
        );
        let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "output_norm.weight",
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.weight",
                "blk.1.attn_norm.weight",
                "blk.1.attn_q.weight",
            ]
        );
        // tied embeddings take the output rule
        assert_eq!(g.tensor("token_embd.weight").unwrap().ty, GgmlType::Q6K);
        assert_eq!(report.without_imatrix, ["token_embd.weight"]);
        assert!(report
            .tensors
            .iter()
            .filter(|t| t.name.contains("attn_q"))
            .all(|t| t.used_imatrix));
    }

    #[test]
    fn requantizing_needs_permission() {
        let dir = tempfile::tempdir().unwrap();
        let input = tiny_model(dir.path(), 256, true, wave);
        let out = dir.path().join("out.gguf");
        let e = quantize_model(&input, &out, &params(LlamaFtype::Q8_0), |_| {}).unwrap_err();
        assert!(
            e.to_string()
                .contains("tensor blk.1.attn_q.weight is already Q4_0"),
            "{e}"
        );
        assert!(!out.exists());
        let mut p = params(LlamaFtype::Q8_0);
        p.allow_requantize = true;
        quantize_model(&input, &out, &p, |_| {}).unwrap();
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(g.tensor("blk.1.attn_q.weight").unwrap().ty, GgmlType::Q8_0);
    }

    #[test]
    fn an_imatrix_that_does_not_fit_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let input = tiny_model(dir.path(), 256, false, wave);
        let out = dir.path().join("out.gguf");
        let check = |im: &Imatrix| {
            let mut p = params(LlamaFtype::Q4_0);
            p.imatrix = Some(ImatrixSource {
                path: "x.dat".into(),
                data: im,
            });
            quantize_model(&input, &out, &p, |_| {})
                .unwrap_err()
                .to_string()
        };
        // a wrong-sized token_embd entry is ignored, as llama-quantize does
        let im = imatrix(&[
            ("token_embd.weight", 3),
            ("blk.0.attn_q.weight", 128),
            ("blk.1.attn_q.weight", 512),
        ]);
        let e = check(&im);
        assert!(e.contains("x.dat does not fit"), "{e}");
        assert!(
            e.contains("blk.0.attn_q.weight: 128 values, the tensor needs 256"),
            "{e}"
        );
        assert!(e.contains("blk.1.attn_q.weight: 512 values"), "{e}");
        assert!(!e.contains("token_embd"), "{e}");
        let e = check(&imatrix(&[("model.layers.0.q_proj", 256)]));
        assert!(
            e.contains("none of its 1 entries names a tensor being quantized"),
            "{e}"
        );
        let mut nan = imatrix(&[("blk.0.attn_q.weight", 256)]);
        nan.entries.values_mut().next().unwrap().in_sum2[7] = f32::NAN;
        assert!(check(&nan).contains("entry blk.0.attn_q.weight holds the non-finite value NaN"));
        assert!(!out.exists());
    }

    #[test]
    fn non_finite_results_are_rejected_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let input = tiny_model(dir.path(), 256, false, |i| {
            if i == 300 {
                f32::INFINITY
            } else {
                wave(i)
            }
        });
        let out = dir.path().join("out.gguf");
        let e = quantize_model(&input, &out, &params(LlamaFtype::Q8_0), |_| {}).unwrap_err();
        assert!(
            matches!(e, QuantizeModelError::NonFinite { block: 9, .. }),
            "{e}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the input"
        );
    }

    #[test]
    fn overrides_and_rows_that_fit_no_type() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.gguf");
        let input = tiny_model(dir.path(), 96, false, wave);
        // the mix falls back (Q4_K -> Q5_0; tied token_embd: Q6_K -> Q8_0) ...
        quantize_model(&input, &out, &params(LlamaFtype::Q4KM), |_| {}).unwrap();
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().ty, GgmlType::Q5_0);
        assert_eq!(g.tensor("token_embd.weight").unwrap().ty, GgmlType::Q8_0);
        // ... an explicit type is taken as asked ...
        let mut p = params(LlamaFtype::Q4KM);
        p.mix.token_embedding_type = Some(GgmlType::F16);
        quantize_model(&input, &out, &p, |_| {}).unwrap();
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(g.tensor("token_embd.weight").unwrap().ty, GgmlType::F16);
        // ... and --pure has no fallback
        p.mix.pure = true;
        let e = quantize_model(&input, &out, &p, |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor blk.0.attn_q.weight: rows of 96 fit neither Q4_K"),
            "{e}"
        );
    }
}
