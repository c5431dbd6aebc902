//! Writing a group-quantized artifact (GPTQ or AWQ folder): the layout adapter, the f16 range
//! check of the dense tensors, and the streaming of each block's packed linears into an
//! [`ArtifactWriter`] as the pipeline finishes it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use calib::pipeline::{BlockQuant, PipelineError};
use quant::groupq::GroupQuant;
use quant::hf::ModelCard;
use quant::safetensors_out::Dtype;
use runtime::export::{
    base_config_json, ArtifactWriter, DenseDtype, LinearLayout, LinearTensor, QuantizedLinears,
};
use runtime::model::{Layer, LinearKind};
use runtime::Model;

/// Tensor shapes of one [rows × cols] linear: (suffix, dtype, shape) in packing order.
pub type Shapes = dyn Fn(usize, usize) -> Vec<(&'static str, Dtype, Vec<usize>)>;

/// Every block linear stored as the format's tensors.
pub struct Layout<'a>(pub &'a Shapes);

impl LinearLayout for Layout<'_> {
    fn tensors(
        &self,
        _: usize,
        _: LinearKind,
        rows: usize,
        cols: usize,
    ) -> Option<Vec<LinearTensor>> {
        Some(
            (self.0)(rows, cols)
                .into_iter()
                .map(|(s, d, shape)| LinearTensor::new(s, d, shape))
                .collect(),
        )
    }
}

/// The first block linear whose input features `group` does not divide.
pub fn check_group_size(model: &Model, group: usize) -> anyhow::Result<()> {
    for (i, l) in model.layers.iter().enumerate() {
        for kind in LinearKind::ALL {
            let cols = l.linear(kind).w.cols();
            if !cols.is_multiple_of(group) {
                let fits: Vec<String> = [32, 64, 128]
                    .iter()
                    .filter(|g| {
                        model.layers.iter().all(|l| {
                            LinearKind::ALL
                                .iter()
                                .all(|k| l.linear(*k).w.cols() % **g == 0)
                        })
                    })
                    .map(|g| g.to_string())
                    .collect();
                anyhow::bail!(
                    "--group-size {group} does not divide the {cols} input features of \
                     model.layers.{i}.{} (group sizes that fit every linear: {})",
                    kind.hf_name(),
                    if fits.is_empty() {
                        "none of 32, 64, 128".into()
                    } else {
                        fits.join(", ")
                    }
                );
            }
        }
    }
    Ok(())
}

/// Fails when a value of `v` would not survive conversion to f16 (|x| > 65504).
fn check_f16(name: &str, v: &[f32]) -> anyhow::Result<()> {
    if let Some(x) = v.iter().find(|x| !x.is_finite() || x.abs() > 65504.0) {
        anyhow::bail!("{name} holds {x}, outside the range of float16 (the dtype of the artifact)");
    }
    Ok(())
}

/// Checks the dense tensors the artifact stores in f16 besides the block's (embeddings, final
/// norm, untied head).
pub fn check_model_f16(model: &Model) -> anyhow::Result<()> {
    let mut row = vec![0f32; model.embed.cols()];
    for r in 0..model.embed.rows() {
        model.embed.dequantize_row(r, &mut row);
        check_f16("model.embed_tokens.weight", &row)?;
    }
    if !std::sync::Arc::ptr_eq(&model.embed, &model.output) {
        let mut row = vec![0f32; model.output.cols()];
        for r in 0..model.output.rows() {
            model.output.dequantize_row(r, &mut row);
            check_f16("lm_head.weight", &row)?;
        }
    }
    check_f16("model.norm.weight", &model.output_norm)
}

/// Checks a finished block's norms and biases for f16.
fn check_layer_f16(index: usize, layer: &Layer) -> anyhow::Result<()> {
    let p = format!("model.layers.{index}");
    check_f16(&format!("{p}.input_layernorm.weight"), &layer.attn_norm)?;
    check_f16(
        &format!("{p}.post_attention_layernorm.weight"),
        &layer.ffn_norm,
    )?;
    for kind in LinearKind::ALL {
        if let Some(b) = &layer.linear(kind).bias {
            check_f16(&format!("{p}.{}.bias", kind.hf_name()), b)?;
        }
    }
    Ok(())
}

/// An artifact being written: created before the pipeline starts, fed one block at a time.
pub struct Artifact {
    writer: ArtifactWriter,
    pack: fn(&GroupQuant) -> Result<Vec<Vec<u8>>, String>,
}

impl Artifact {
    pub fn create(
        model: &Model,
        out: &Path,
        shapes: &Shapes,
        pack: fn(&GroupQuant) -> Result<Vec<Vec<u8>>, String>,
        max_shard_bytes: usize,
    ) -> anyhow::Result<Artifact> {
        check_model_f16(model)?;
        let writer = ArtifactWriter::create(
            model,
            out,
            DenseDtype::F16,
            &Layout(shapes),
            max_shard_bytes,
        )
        .with_context(|| format!("writing {}", out.display()))?;
        Ok(Artifact { writer, pack })
    }

    /// Packs and writes block `index` (the pipeline's sink).
    pub fn block(
        &mut self,
        index: usize,
        layer: &Layer,
        q: BlockQuant,
    ) -> Result<(), PipelineError> {
        check_layer_f16(index, layer).map_err(|e| PipelineError::Sink(e.to_string()))?;
        let mut linears = QuantizedLinears::new();
        for (kind, gq) in q {
            let bytes = (self.pack)(&gq).map_err(|msg| PipelineError::Linear {
                layer: index,
                kind,
                msg,
            })?;
            linears.insert(kind, bytes);
        }
        self.writer
            .write_layer(index, layer, &linears)
            .map_err(|e| PipelineError::Sink(e.to_string()))
    }

    /// Writes config.json (the model's, in float16, with `quantization_config`), the extra
    /// JSON files, the tokenizer files and the model card, then moves the folder into place.
    pub fn finish(
        self,
        model: &Model,
        source: &Path,
        quantization_config: serde_json::Value,
        extra: &[(&str, &serde_json::Value)],
        card: &ModelCard,
    ) -> anyhow::Result<PathBuf> {
        let mut config = base_config_json(model, DenseDtype::F16.torch_name());
        config["quantization_config"] = quantization_config;
        for (name, v) in extra {
            runtime::export::write_json(&self.writer.path().join(name), v)?;
        }
        Ok(self
            .writer
            .finish(model, &config, Some(source), Some(card))?)
    }
}

/// The command line that made the artifact, for its model card.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| if a.contains(' ') { format!("{a:?}") } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}
