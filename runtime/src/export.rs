//! Writes Hugging Face folders: the dense export of any loaded model (`quantize convert`) and the
//! quantized artifacts (AWQ, GPTQ, compressed-tensors), through one streaming writer. Tensors go
//! out one at a time in a fixed order (embeddings, then each block, then the final norm and head),
//! so a converter can hand over each block's quantized linears as soon as it has them, holding
//! one block at a time. From a llama-layout GGUF this undoes llama.cpp's Q/K row permutation,
//! giving the rotate-half layout transformers expects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use kernels::SharedMatrix;
use quant::atomic::AtomicOutput;
use quant::hf::ModelCard;
use quant::safetensors_out::{Dtype, ShardedWriter, TensorSpec};
use rayon::prelude::*;

use crate::model::{Layer, LinearKind, Model, RopeStyle};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("layer {layer} {kind:?}: {msg}")]
    Linear {
        layer: usize,
        kind: LinearKind,
        msg: String,
    },
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseDtype {
    BF16,
    F16,
    F32,
}

impl DenseDtype {
    pub fn safetensors(self) -> Dtype {
        match self {
            DenseDtype::BF16 => Dtype::BF16,
            DenseDtype::F16 => Dtype::F16,
            DenseDtype::F32 => Dtype::F32,
        }
    }

    /// The name config.json's `torch_dtype` uses.
    pub fn torch_name(self) -> &'static str {
        match self {
            DenseDtype::BF16 => "bfloat16",
            DenseDtype::F16 => "float16",
            DenseDtype::F32 => "float32",
        }
    }

    /// Appends the little-endian encoding of `v` to `out`.
    pub fn encode_into(self, v: &[f32], out: &mut Vec<u8>) {
        match self {
            DenseDtype::BF16 => out.extend(v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes())),
            DenseDtype::F16 => out.extend(v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes())),
            DenseDtype::F32 => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        }
    }

    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(v.len() * self.safetensors().size());
        self.encode_into(v, &mut out);
        out
    }
}

/// One tensor a linear is stored as: `<module path>.<suffix>`, e.g. "qweight" or "weight_scale".
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTensor {
    pub suffix: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl LinearTensor {
    pub fn new(suffix: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> LinearTensor {
        LinearTensor {
            suffix: suffix.into(),
            dtype,
            shape,
        }
    }
}

/// How an artifact stores the block linears. Everything else (embeddings, norms, biases, an
/// untied head) is written dense in the folder's dtype.
pub trait LinearLayout {
    /// The tensors that replace `<module>.weight` for the [rows × cols] linear `kind` of block
    /// `layer`, in the order their bytes are handed to [`ArtifactWriter::write_layer`]; `None`
    /// keeps the linear dense (e.g. a module the format leaves unquantized).
    fn tensors(
        &self,
        layer: usize,
        kind: LinearKind,
        rows: usize,
        cols: usize,
    ) -> Option<Vec<LinearTensor>>;
}

/// Every linear dense: the plain Hugging Face folder.
pub struct DenseLayout;

impl LinearLayout for DenseLayout {
    fn tensors(&self, _: usize, _: LinearKind, _: usize, _: usize) -> Option<Vec<LinearTensor>> {
        None
    }
}

/// The bytes of one block's quantized linears, each in the order its layout lists its tensors.
pub type QuantizedLinears = BTreeMap<LinearKind, Vec<Vec<u8>>>;

/// Maps row `r` of a rotate-half matrix to the row holding it in the adjacent-pair layout.
pub(crate) fn adjacent_row(r: usize, head_dim: usize) -> usize {
    let (head, j) = (r / head_dim, r % head_dim);
    let half = head_dim / 2;
    head * head_dim + if j < half { 2 * j } else { 2 * (j - half) + 1 }
}

/// Whether linear `kind` of `model` is stored with llama.cpp's Q/K row permutation.
fn is_permuted(model: &Model, kind: LinearKind) -> bool {
    model.rope.style == RopeStyle::Adjacent && matches!(kind, LinearKind::Q | LinearKind::K)
}

/// Row `r` of matrix `m` in Hugging Face (rotate-half) order.
fn hf_row(m: &SharedMatrix, permuted: Option<usize>, r: usize, out: &mut [f32]) {
    m.dequantize_row(permuted.map_or(r, |hd| adjacent_row(r, hd)), out);
}

/// The weight of linear `kind` in `layer` as f32 [rows × cols], row-major, in the Hugging Face
/// layout (Q/K rows un-permuted when the model came from a llama-layout GGUF): what every
/// Hugging Face-format converter quantizes.
pub fn hf_linear_weight(model: &Model, layer: &Layer, kind: LinearKind) -> Vec<f32> {
    let m = &layer.linear(kind).w;
    let permuted = is_permuted(model, kind).then_some(model.config.head_dim);
    let cols = m.cols();
    let mut w = vec![0f32; m.rows() * cols];
    w.par_chunks_exact_mut(cols)
        .enumerate()
        .for_each(|(r, row)| hf_row(m, permuted, r, row));
    w
}

/// One linear's place in the output: its tensors and whether it is written dense.
struct LinearPlan {
    kind: LinearKind,
    tensors: Option<Vec<LinearTensor>>,
    has_bias: bool,
}

/// Writes a Hugging Face folder tensor by tensor into a temporary sibling of the destination,
/// renamed into place by [`finish`](Self::finish).
pub struct ArtifactWriter {
    dir: AtomicOutput,
    st: ShardedWriter,
    dtype: DenseDtype,
    /// Q/K un-permutation (head_dim) for dense linears of a llama-layout model.
    head_dim_if_permuted: Option<usize>,
    plans: Vec<Vec<LinearPlan>>,
    next_layer: usize,
    buf: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_owned();
    move |source| ExportError::Io { path, source }
}

fn hf_name(layer: usize, kind: LinearKind) -> String {
    format!("model.layers.{layer}.{}", kind.hf_name())
}

impl ArtifactWriter {
    /// Plans the folder for `model` with its linears stored as `layout` says and writes the
    /// embeddings. Shards hold at most `max_shard_bytes`.
    pub fn create(
        model: &Model,
        out: &Path,
        dtype: DenseDtype,
        layout: &dyn LinearLayout,
        max_shard_bytes: usize,
    ) -> Result<ArtifactWriter, ExportError> {
        let tied = Arc::ptr_eq(&model.embed, &model.output);
        let permuted = model.rope.style == RopeStyle::Adjacent;
        let dense = dtype.safetensors();
        let vector = |name: String, n: usize| TensorSpec::new(name, dense, vec![n]);

        let mut specs = vec![TensorSpec::new(
            "model.embed_tokens.weight",
            dense,
            vec![model.embed.rows(), model.embed.cols()],
        )];
        let mut plans = Vec::with_capacity(model.layers.len());
        for (i, l) in model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            specs.push(vector(
                format!("{p}.input_layernorm.weight"),
                l.attn_norm.len(),
            ));
            let mut layer_plan = Vec::new();
            for kind in LinearKind::ALL {
                let lin = l.linear(kind);
                let (rows, cols) = (lin.w.rows(), lin.w.cols());
                let name = hf_name(i, kind);
                let tensors = layout.tensors(i, kind, rows, cols);
                match &tensors {
                    None => specs.push(TensorSpec::new(
                        format!("{name}.weight"),
                        dense,
                        vec![rows, cols],
                    )),
                    Some(ts) => specs.extend(ts.iter().map(|t| {
                        TensorSpec::new(format!("{name}.{}", t.suffix), t.dtype, t.shape.clone())
                    })),
                }
                if let Some(b) = &lin.bias {
                    if permuted && matches!(kind, LinearKind::Q | LinearKind::K) {
                        return Err(ExportError::Unsupported(
                            "q/k biases in a permuted (llama-layout) model are not supported"
                                .into(),
                        ));
                    }
                    specs.push(vector(format!("{name}.bias"), b.len()));
                }
                layer_plan.push(LinearPlan {
                    kind,
                    tensors,
                    has_bias: lin.bias.is_some(),
                });
            }
            specs.push(vector(
                format!("{p}.post_attention_layernorm.weight"),
                l.ffn_norm.len(),
            ));
            plans.push(layer_plan);
        }
        specs.push(vector("model.norm.weight".into(), model.output_norm.len()));
        if !tied {
            specs.push(TensorSpec::new(
                "lm_head.weight",
                dense,
                vec![model.output.rows(), model.output.cols()],
            ));
        }

        let dir = AtomicOutput::dir(out).map_err(io_err(out))?;
        let st_path = dir.path().to_owned();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let st = ShardedWriter::create(&st_path, specs, max_shard_bytes, meta)
            .map_err(io_err(&st_path))?;
        let mut w = ArtifactWriter {
            dir,
            st,
            dtype,
            head_dim_if_permuted: permuted.then_some(model.config.head_dim),
            plans,
            next_layer: 0,
            buf: Vec::new(),
        };
        w.write_matrix("model.embed_tokens.weight", &model.embed, None)?;
        Ok(w)
    }

    /// The temporary folder being filled (extra files such as quantize_config.json go here).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&mut self, name: &str, data: &[u8]) -> Result<(), ExportError> {
        let p = self.dir.path().to_owned();
        self.st.write(name, data).map_err(io_err(&p))
    }

    fn write_vector(&mut self, name: &str, v: &[f32]) -> Result<(), ExportError> {
        let bytes = self.dtype.encode(v);
        self.write(name, &bytes)
    }

    fn write_matrix(
        &mut self,
        name: &str,
        m: &SharedMatrix,
        permuted: Option<usize>,
    ) -> Result<(), ExportError> {
        let mut all = std::mem::take(&mut self.buf);
        all.clear();
        let mut row = vec![0f32; m.cols()];
        for r in 0..m.rows() {
            hf_row(m, permuted, r, &mut row);
            self.dtype.encode_into(&row, &mut all);
        }
        let result = self.write(name, &all);
        self.buf = all;
        result
    }

    /// Writes block `index` (blocks go in order): its norms and biases from `layer`, its dense
    /// linears from `layer`'s matrices, and its quantized linears from `quantized`, which must
    /// hold bytes for exactly the linears the layout quantizes.
    pub fn write_layer(
        &mut self,
        index: usize,
        layer: &Layer,
        quantized: &QuantizedLinears,
    ) -> Result<(), ExportError> {
        if index != self.next_layer || index >= self.plans.len() {
            return Err(ExportError::Unsupported(format!(
                "block {index} written where block {} was due",
                self.next_layer
            )));
        }
        // Everything is checked before the first byte goes out, so a refused block can be
        // handed over again.
        let plans = &self.plans[index];
        for kind in LinearKind::ALL {
            let bad = |msg: &str| ExportError::Linear {
                layer: index,
                kind,
                msg: msg.into(),
            };
            let plan = plans.iter().find(|p| p.kind == kind);
            let want = plan.and_then(|p| p.tensors.as_ref()).map(Vec::len);
            match (want, quantized.get(&kind).map(Vec::len)) {
                (None, Some(_)) => {
                    return Err(bad("quantized bytes given for a linear kept dense"))
                }
                (Some(_), None) => return Err(bad("no quantized bytes given")),
                (Some(w), Some(g)) if w != g => {
                    return Err(bad(&format!("{g} tensors given, the layout has {w}")))
                }
                _ => {}
            }
            if plan.is_some_and(|p| p.has_bias != layer.linear(kind).bias.is_some()) {
                return Err(bad("the bias differs from the planned model's"));
            }
        }
        let p = format!("model.layers.{index}");
        self.write_vector(&format!("{p}.input_layernorm.weight"), &layer.attn_norm)?;
        let plans = std::mem::take(&mut self.plans[index]);
        for plan in &plans {
            let name = hf_name(index, plan.kind);
            let lin = layer.linear(plan.kind);
            match (&plan.tensors, quantized.get(&plan.kind)) {
                (Some(ts), Some(data)) => {
                    for (t, d) in ts.iter().zip(data) {
                        self.write(&format!("{name}.{}", t.suffix), d)?;
                    }
                }
                _ => {
                    let permuted = self
                        .head_dim_if_permuted
                        .filter(|_| matches!(plan.kind, LinearKind::Q | LinearKind::K));
                    self.write_matrix(&format!("{name}.weight"), &lin.w, permuted)?;
                }
            }
            if let Some(b) = &lin.bias {
                self.write_vector(&format!("{name}.bias"), b)?;
            }
        }
        self.write_vector(
            &format!("{p}.post_attention_layernorm.weight"),
            &layer.ffn_norm,
        )?;
        self.next_layer += 1;
        Ok(())
    }

    /// Writes the final norm and head, config.json (`config`), the tokenizer files (copied from
    /// `source` when it is a Hugging Face folder) and, when given, README.md from `card`; then
    /// moves the folder into place.
    pub fn finish(
        mut self,
        model: &Model,
        config: &serde_json::Value,
        source: Option<&Path>,
        card: Option<&ModelCard>,
    ) -> Result<PathBuf, ExportError> {
        if self.next_layer != self.plans.len() {
            return Err(ExportError::Unsupported(format!(
                "finished after {} of {} blocks",
                self.next_layer,
                self.plans.len()
            )));
        }
        self.write_vector("model.norm.weight", &model.output_norm)?;
        if !Arc::ptr_eq(&model.embed, &model.output) {
            self.write_matrix("lm_head.weight", &model.output, None)?;
        }
        let dir = self.dir.path().to_owned();
        self.st.finish().map_err(io_err(&dir))?;
        write_json(&dir.join("config.json"), config)?;
        write_tokenizer_files(model, source, &dir)?;
        if let Some(card) = card {
            let readme = dir.join("README.md");
            std::fs::write(&readme, card.render()).map_err(io_err(&readme))?;
        }
        let out = self.dir.dest().to_owned();
        self.dir.commit().map_err(io_err(&out))
    }
}

/// Writes `model` (loaded from `source`) to `out` as a dense Hugging Face folder, in safetensors
/// shards of at most `max_shard_bytes`.
pub fn write_hf_folder(
    model: &Model,
    source: &Path,
    out: &Path,
    dtype: DenseDtype,
    max_shard_bytes: usize,
) -> Result<PathBuf, ExportError> {
    let mut w = ArtifactWriter::create(model, out, dtype, &DenseLayout, max_shard_bytes)?;
    let none = QuantizedLinears::new();
    for (i, l) in model.layers.iter().enumerate() {
        w.write_layer(i, l, &none)?;
    }
    w.finish(
        model,
        &base_config_json(model, dtype.torch_name()),
        Some(source),
        None,
    )
}

/// config.json for `model` as a dense folder in `torch_dtype`; quantized artifacts add their
/// `quantization_config` to it.
pub fn base_config_json(model: &Model, torch_dtype: &str) -> serde_json::Value {
    let mut config = model.config.to_json(torch_dtype);
    config["tie_word_embeddings"] = std::sync::Arc::ptr_eq(&model.embed, &model.output).into();
    config
}

/// Tokenizer files for an output folder: copied from `source` when it is a Hugging Face folder
/// (keeping everything the original tokenizer files say), else written from the model's
/// tokenizer. Also writes generation_config.json when the source has none.
pub fn write_tokenizer_files(
    model: &Model,
    source: Option<&Path>,
    dir: &Path,
) -> Result<(), ExportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    const FILES: [&str; 6] = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "chat_template.jinja",
        "tokenizer.model",
    ];
    if let Some(src) = source.filter(|s| s.join("tokenizer.json").exists()) {
        for f in FILES {
            if src.join(f).exists() {
                std::fs::copy(src.join(f), dir.join(f)).map_err(io(&src.join(f)))?;
            }
        }
        if dir.join("generation_config.json").exists() {
            return Ok(());
        }
    } else if let Some(tok) = model.tokenizer() {
        let tj = dir.join("tokenizer.json");
        std::fs::write(&tj, tok.to_hf_json()?).map_err(io(&tj))?;
        write_json(
            &dir.join("tokenizer_config.json"),
            &tok.hf_tokenizer_config(model.config.max_position_embeddings),
        )?;
    }
    let mut gen = serde_json::json!({"_from_model_config": true});
    if let Some(b) = model.config.bos_token_id {
        gen["bos_token_id"] = b.into();
    }
    let eos: Vec<u32> = model
        .tokenizer()
        .map(|t| t.eos().to_vec())
        .unwrap_or_else(|| model.config.eos_token_ids.clone());
    if !eos.is_empty() {
        gen["eos_token_id"] = if eos.len() == 1 {
            eos[0].into()
        } else {
            eos.into()
        };
    }
    write_json(&dir.join("generation_config.json"), &gen)
}

pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
    std::fs::write(path, text + "\n").map_err(|source| ExportError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::SyntheticSpec;

    /// Stores each down projection as a made-up pair of tensors, everything else dense.
    struct DownOnly;

    impl LinearLayout for DownOnly {
        fn tensors(
            &self,
            _: usize,
            kind: LinearKind,
            rows: usize,
            cols: usize,
        ) -> Option<Vec<LinearTensor>> {
            (kind == LinearKind::Down).then(|| {
                vec![
                    LinearTensor::new("packed", Dtype::I32, vec![rows, cols / 8]),
                    LinearTensor::new("scale", Dtype::F16, vec![rows, 1]),
                ]
            })
        }
    }

    fn down_bytes(model: &Model) -> QuantizedLinears {
        let down = &model.layers[0].down.w;
        let (rows, cols) = (down.rows(), down.cols());
        BTreeMap::from([(
            LinearKind::Down,
            vec![vec![7u8; rows * cols / 2], vec![1u8; rows * 2]],
        )])
    }

    #[test]
    fn dense_folder_loads_back_with_the_same_logits() {
        let spec = SyntheticSpec {
            tied: false,
            qkv_bias: true,
            ..SyntheticSpec::default()
        };
        let model = spec.build(3);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        write_hf_folder(&model, dir.path(), &out, DenseDtype::F32, 1 << 30).unwrap();
        let back = crate::load(&out).unwrap();
        let tokens = [1u32, 5, 9, 2, 77];
        let a = model.forward(&tokens, &mut model.new_cache(), 0);
        let b = back.forward(&tokens, &mut back.new_cache(), 0);
        assert_eq!(a, b, "f32 round trip changed the logits");
    }

    #[test]
    fn quantized_layout_writes_its_tensors_in_place_of_the_weight() {
        let model = SyntheticSpec::default().build(1);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("q");
        let mut w =
            ArtifactWriter::create(&model, &out, DenseDtype::BF16, &DownOnly, 1 << 30).unwrap();
        for (i, l) in model.layers.iter().enumerate() {
            w.write_layer(i, l, &down_bytes(&model)).unwrap();
        }
        let cfg = serde_json::json!({"quantization_config": {"quant_method": "test"}});
        w.finish(&model, &cfg, None, None).unwrap();

        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let t = meta.tensors();
        let packed = &t["model.layers.1.mlp.down_proj.packed"];
        assert_eq!(packed.shape, vec![64, 16]);
        assert!(!t.contains_key("model.layers.1.mlp.down_proj.weight"));
        assert_eq!(
            t["model.layers.1.mlp.up_proj.weight"].dtype,
            safetensors::Dtype::BF16
        );
        assert!(!t.contains_key("lm_head.weight"), "tied head written");
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(written, cfg);
    }

    #[test]
    fn misordered_or_missing_linears_fail_and_leave_nothing() {
        let model = SyntheticSpec::default().build(1);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("q");
        let l = &model.layers[0];
        let mut w =
            ArtifactWriter::create(&model, &out, DenseDtype::BF16, &DownOnly, 1 << 30).unwrap();
        assert!(w.write_layer(1, l, &down_bytes(&model)).is_err());
        assert!(matches!(
            w.write_layer(0, l, &QuantizedLinears::new()),
            Err(ExportError::Linear {
                kind: LinearKind::Down,
                ..
            })
        ));
        drop(w);
        let mut w =
            ArtifactWriter::create(&model, &out, DenseDtype::BF16, &DownOnly, 1 << 30).unwrap();
        let mut extra = down_bytes(&model);
        extra.insert(LinearKind::Q, vec![vec![0u8; 4]]);
        assert!(w.write_layer(0, l, &extra).is_err());
        w.write_layer(0, l, &down_bytes(&model)).unwrap();
        assert!(w
            .finish(&model, &serde_json::json!({}), None, None)
            .is_err());
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary left behind"
        );
    }

    #[test]
    fn adjacent_row_inverts_the_gguf_permutation() {
        // convert_hf_to_gguf: within a head, new row 2j = old j, new row 2j+1 = old j + hd/2.
        let hd = 8;
        for r in 0..2 * hd {
            let a = adjacent_row(r, hd);
            let (head, j) = (a / hd, a % hd);
            let back = head * hd + if j % 2 == 0 { j / 2 } else { j / 2 + hd / 2 };
            assert_eq!(back, r);
        }
    }
}
