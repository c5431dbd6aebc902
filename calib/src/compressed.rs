//! The INT8 and FP8 converters: every block linear of a model quantized into a compressed-tensors
//! folder (FP8 dynamic/static/block, W8A8 with or without SmoothQuant, W8A16), one block at a
//! time, through the streaming [`ArtifactWriter`]: weights come from the memory-mapped model in
//! Hugging Face layout, activation statistics (static FP8 scales, SmoothQuant ranges) from
//! [`crate::stats::collect`] over the calibration samples.
//!
//! Nothing is clipped silently: non-finite weights or statistics, scales or smoothed norm
//! weights the output dtype cannot hold are errors naming the layer; channels SmoothQuant leaves
//! at its floor are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use quant::fp8;
use quant::hf::compressed_tensors::{
    quantize_linear, LinearQuantError, ScaleDtype, Scheme, StaticScales,
};
use quant::hf::ModelCard;
use quant::smoothquant;
use runtime::export::{
    base_config_json, hf_linear_weight, ArtifactWriter, DenseDtype, ExportError, LinearLayout,
    LinearTensor, QuantizedLinears,
};
use runtime::model::{Layer, LinearKind};
use runtime::Model;

use crate::stats::{ActivationStats, InputSite};

#[derive(Clone, Debug)]
pub struct CompressedOptions {
    pub scheme: Scheme,
    /// SmoothQuant migration strength α (0..=1) before quantizing, or None.
    pub smoothquant: Option<f64>,
    /// Largest safetensors shard.
    pub max_shard_bytes: usize,
}

/// What a finished conversion reports.
#[derive(Clone, Debug)]
pub struct Conversion {
    pub out: PathBuf,
    /// Things worth knowing that were not errors (one line each).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("layer {layer} {module}: {source}")]
    Linear {
        layer: usize,
        module: &'static str,
        #[source]
        source: LinearQuantError,
    },
    #[error("calibration statistics are not usable: {0}")]
    Stats(String),
    #[error("SmoothQuant, layer {layer} {norm}: {msg}")]
    Smoothing {
        layer: usize,
        norm: &'static str,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The dense dtype of the output (the model's own; bf16 for a model that does not say) and the
/// matching scale dtype.
pub fn output_dtype(model: &Model) -> (DenseDtype, ScaleDtype) {
    match model.config.torch_dtype.as_deref() {
        Some("float16") => (DenseDtype::F16, ScaleDtype::F16),
        Some("float32") => (DenseDtype::F32, ScaleDtype::F32),
        _ => (DenseDtype::BF16, ScaleDtype::BF16),
    }
}

/// Whether `opts` needs activation statistics.
pub fn needs_stats(opts: &CompressedOptions) -> bool {
    opts.smoothquant.is_some() || opts.scheme == Scheme::Fp8Static
}

/// Where the linears' quantized tensors go.
struct Layout {
    scheme: Scheme,
    dtype: ScaleDtype,
}

impl LinearLayout for Layout {
    fn tensors(
        &self,
        _: usize,
        _: LinearKind,
        rows: usize,
        cols: usize,
    ) -> Option<Vec<LinearTensor>> {
        Some(
            self.scheme
                .linear_tensors(rows, cols, self.dtype)
                .into_iter()
                .map(|t| LinearTensor::new(t.suffix, t.dtype, t.shape))
                .collect(),
        )
    }
}

/// The sites whose statistics the options use (the sites calibration must observe).
pub fn sites_used(opts: &CompressedOptions) -> Vec<InputSite> {
    if opts.scheme == Scheme::Fp8Static {
        vec![
            InputSite::AttnIn,
            InputSite::AttnOut,
            InputSite::MlpIn,
            InputSite::MlpAct,
        ]
    } else {
        vec![InputSite::AttnIn, InputSite::MlpIn]
    }
}

fn site_name(s: InputSite) -> &'static str {
    match s {
        InputSite::AttnIn => "attention input (q/k/v)",
        InputSite::AttnOut => "attention output (o)",
        InputSite::MlpIn => "MLP input (gate/up)",
        InputSite::MlpAct => "MLP activation (down)",
    }
}

fn first_kind(s: InputSite) -> LinearKind {
    match s {
        InputSite::AttnIn => LinearKind::Q,
        InputSite::AttnOut => LinearKind::O,
        InputSite::MlpIn => LinearKind::Gate,
        InputSite::MlpAct => LinearKind::Down,
    }
}

/// Every statistic the conversion reads must exist and be finite: a NaN or ∞ in calibration
/// would become a NaN scale or a NaN smoothing factor.
fn check_stats(
    model: &Model,
    stats: &ActivationStats,
    opts: &CompressedOptions,
) -> Result<(), ConvertError> {
    let mut bad = Vec::new();
    for layer in 0..model.layers.len() {
        for site in sites_used(opts) {
            match stats.get(layer, first_kind(site)) {
                None => bad.push(format!("layer {layer} {}: no statistics", site_name(site))),
                Some(s) if s.tokens == 0 => {
                    bad.push(format!("layer {layer} {}: no tokens seen", site_name(site)))
                }
                Some(s) if s.non_finite > 0 => bad.push(format!(
                    "layer {layer} {}: {} NaN/infinite values in {} tokens",
                    site_name(site),
                    s.non_finite,
                    s.tokens
                )),
                _ => {}
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ConvertError::Stats(bad.join("; ")))
    }
}

/// Converts `model` (loaded from `source`, whose tokenizer files are copied) into `out`.
/// `progress` is called after each block.
pub fn convert(
    model: &Model,
    source: Option<&Path>,
    out: &Path,
    opts: &CompressedOptions,
    stats: Option<&ActivationStats>,
    card: &ModelCard,
    mut progress: impl FnMut(usize),
) -> Result<Conversion, ConvertError> {
    if let Some(a) = opts.smoothquant {
        if !(0.0..=1.0).contains(&a) {
            return Err(ConvertError::Invalid(format!(
                "SmoothQuant strength {a} is outside 0..=1"
            )));
        }
    }
    let stats = match (needs_stats(opts), stats) {
        (true, None) => {
            return Err(ConvertError::Invalid(
                "this scheme needs calibration statistics".into(),
            ))
        }
        (true, Some(s)) => {
            check_stats(model, s, opts)?;
            Some(s)
        }
        (false, _) => None,
    };
    let (dense, dtype) = output_dtype(model);
    let layout = Layout {
        scheme: opts.scheme,
        dtype,
    };
    let mut w = ArtifactWriter::create(model, out, dense, &layout, opts.max_shard_bytes)?;
    let mut notes = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        let (block, quantized) = convert_block(model, i, layer, opts, stats, dtype, &mut notes)?;
        w.write_layer(i, &block, &quantized)?;
        progress(i + 1);
    }
    let mut config = base_config_json(model, dense.torch_name());
    config["quantization_config"] = opts.scheme.quantization_config(&["lm_head"]);
    let out = w.finish(model, &config, source, Some(card))?;
    Ok(Conversion { out, notes })
}

const FUSED: [&[LinearKind]; 4] = [
    &[LinearKind::Q, LinearKind::K, LinearKind::V],
    &[LinearKind::O],
    &[LinearKind::Gate, LinearKind::Up],
    &[LinearKind::Down],
];

/// Block `i` ready to write: the block with its (possibly smoothed) norms, and the bytes of its
/// quantized linears.
fn convert_block(
    model: &Model,
    i: usize,
    layer: &Layer,
    opts: &CompressedOptions,
    stats: Option<&ActivationStats>,
    dtype: ScaleDtype,
    notes: &mut Vec<String>,
) -> Result<(Layer, QuantizedLinears), ConvertError> {
    let mut block = layer.clone();
    let mut weights: BTreeMap<LinearKind, Vec<f32>> = LinearKind::ALL
        .par_iter()
        .map(|&k| (k, hf_linear_weight(model, layer, k)))
        .collect();
    if let (Some(alpha), Some(stats)) = (opts.smoothquant, stats) {
        smooth_block(i, &mut block, &mut weights, stats, alpha, dtype, notes)?;
    }
    let mut jobs = Vec::new();
    for kinds in FUSED {
        let statics = match (opts.scheme, stats) {
            (Scheme::Fp8Static, Some(stats)) => {
                let site = stats.get(i, kinds[0]).expect("checked by check_stats");
                let act_amax = site.amax().expect("finite, checked by check_stats");
                let weight_amax = kinds
                    .iter()
                    .map(|k| weights[k].iter().fold(0f32, |m, v| m.max(v.abs())))
                    .fold(0f32, f32::max);
                Some(StaticScales {
                    weight_amax,
                    input_scale: fp8::weight_scale(act_amax, dtype),
                })
            }
            _ => None,
        };
        jobs.extend(kinds.iter().map(|&k| (k, statics)));
    }
    let quantized = jobs
        .into_par_iter()
        .map(|(k, statics)| {
            let lin = &layer.linear(k).w;
            quantize_linear(
                opts.scheme,
                &weights[&k],
                lin.rows(),
                lin.cols(),
                dtype,
                statics,
            )
            .map(|t| (k, t))
            .map_err(|source| ConvertError::Linear {
                layer: i,
                module: k.hf_name(),
                source,
            })
        })
        .collect::<Vec<_>>()
        // The first failing linear in block order, whichever thread found it first.
        .into_iter()
        .collect::<Result<QuantizedLinears, _>>()?;
    Ok((block, quantized))
}

/// SmoothQuant on block `i`: each norm of `block` divided by the smoothing scales (stored in
/// `dtype`) and the columns of the linears reading it multiplied to match, in `weights` (the
/// block's linears in Hugging Face layout, f32).
pub(crate) fn smooth_block(
    i: usize,
    block: &mut Layer,
    weights: &mut BTreeMap<LinearKind, Vec<f32>>,
    stats: &ActivationStats,
    alpha: f64,
    dtype: ScaleDtype,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    for (norm, kinds) in [
        ("input_layernorm", FUSED[0]),
        ("post_attention_layernorm", FUSED[2]),
    ] {
        let site = stats.get(i, kinds[0]).expect("checked by check_stats");
        let gamma = if norm == "input_layernorm" {
            block.attn_norm.clone()
        } else {
            block.ffn_norm.clone()
        };
        let cols = gamma.len();
        let w_absmax = kinds
            .iter()
            .map(|k| smoothquant::column_absmax(&weights[k], cols))
            .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect())
            .expect("a smoothing group has linears");
        // The scales, the norm and the smoothed weights in the model's dtype (the dense dtype,
        // which rounds like the scale dtype), as llm-compressor computes them.
        let raw = smoothquant::smoothing_scales(&site.min, &site.max, &w_absmax, alpha);
        let floored = raw.iter().filter(|v| **v == smoothquant::MIN_SCALE).count();
        let s: Vec<f64> = raw.iter().map(|v| dtype.round(*v as f32) as f64).collect();
        let stored = smoothquant::fold_into_norm(&gamma, &s, |v| dtype.round(v));
        check_smoothed(i, norm, &gamma, &stored, &s)?;
        if floored > 0 {
            notes.push(format!(
                "layer {i} {norm}: {floored} channels with no activation range kept SmoothQuant's floor scale 1e-5"
            ));
        }
        let smoothed: Vec<&mut Vec<f32>> = weights
            .iter_mut()
            .filter_map(|(k, w)| kinds.contains(k).then_some(w))
            .collect();
        smoothed.into_par_iter().for_each(|w| {
            w.par_chunks_mut(cols).for_each(|row| {
                smoothquant::scale_columns(row, &s);
                for v in row.iter_mut() {
                    *v = dtype.round(*v);
                }
            })
        });
        let stored = Arc::new(stored);
        if norm == "input_layernorm" {
            block.attn_norm = stored;
        } else {
            block.ffn_norm = stored;
        }
    }
    Ok(())
}

/// The smoothed norm weights must survive the output dtype: a channel whose γ/s overflows is
/// lost to ∞, one that underflows to 0 silences the channel.
fn check_smoothed(
    layer: usize,
    norm: &'static str,
    gamma: &[f32],
    stored: &[f32],
    s: &[f64],
) -> Result<(), ConvertError> {
    let bad: Vec<usize> = (0..gamma.len())
        .filter(|&j| !stored[j].is_finite() || (gamma[j] != 0.0 && stored[j] == 0.0))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let j = bad[0];
    Err(ConvertError::Smoothing {
        layer,
        norm,
        msg: format!(
            "{} channels of weight/scale do not fit the output dtype (e.g. channel {j}: {} / {:.3e} = {}); lower --smoothquant or write f32",
            bad.len(),
            gamma[j],
            s[j],
            stored[j]
        ),
    })
}

#[cfg(test)]
mod tests;
