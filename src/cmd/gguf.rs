//! `quantize gguf`: a Hugging Face folder (converted as convert_hf_to_gguf.py would) or a GGUF
//! file, quantized to one of llama.cpp's file types with llama-quantize's mixes, bit for bit.

use std::path::{Path, PathBuf};

use anyhow::bail;
use quant::ggml::mix::{LlamaFtype, MixOptions};
use quant::ggml::GgmlType;
use quant::gguf::{
    quantize_source, GgufFile, ImatrixSource, QuantizeParams, QuantizeReport, TensorSource,
};
use quant::imatrix::Imatrix;
use runtime::hf_gguf::{HfGgufOptions, HfGgufSource};
use serde::Serialize;

use super::hub::resolve_model;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face folder, GGUF file (F32/F16/BF16; quantized only with --allow-requantize) or
    /// Hub repository id (org/name, from the local Hugging Face cache).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// llama.cpp file type: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M
    /// Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16 F32 (or its llama_ftype number).
    #[arg(long = "type", value_parser = parse_ftype)]
    ftype: LlamaFtype,
    /// Output GGUF file (written atomically).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Importance matrix (llama-imatrix's GGUF or legacy .dat format).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Every quantized tensor gets the type's default (no mix rules, no fallbacks).
    #[arg(long)]
    pure: bool,
    /// Allow already-quantized input tensors to be requantized (loses quality).
    #[arg(long)]
    allow_requantize: bool,
    /// Type of output.weight.
    #[arg(long, value_parser = parse_ggml_type)]
    output_tensor_type: Option<GgmlType>,
    /// Type of token_embd.weight.
    #[arg(long, value_parser = parse_ggml_type)]
    token_embedding_type: Option<GgmlType>,
    /// Keep output.weight unquantized.
    #[arg(long)]
    leave_output_tensor: bool,
    /// general.name of a converted folder (default: from the folder or repository name).
    #[arg(long)]
    name: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_ftype(s: &str) -> Result<LlamaFtype, String> {
    LlamaFtype::parse(s).ok_or_else(|| {
        let names: Vec<&str> = LlamaFtype::all().map(LlamaFtype::name).collect();
        format!("unknown type {s:?} (known: {})", names.join(", "))
    })
}

fn parse_ggml_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown tensor type {s:?} (known: {})", names.join(", "))
    })
}

#[derive(Serialize)]
struct Summary {
    input: String,
    output: String,
    ftype: String,
    tensors: usize,
    bytes_in: u64,
    bytes_out: u64,
    bits_per_weight: f64,
    seconds: f64,
    fallback_tensors: usize,
    tensors_without_imatrix: Vec<String>,
    types: std::collections::BTreeMap<String, usize>,
}

/// Opens the model argument as a tensor source: a folder through the runtime's HF-to-GGUF
/// mapping, anything else as a GGUF file.
fn open_source(path: &Path, name: Option<String>) -> anyhow::Result<Box<dyn TensorSource>> {
    if path.is_dir() {
        let opts = HfGgufOptions { name };
        return Ok(Box::new(HfGgufSource::open(path, &opts)?));
    }
    Ok(Box::new(GgufFile::open(path)?))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let path = resolve_model(&a.model)?;
    if a.out.exists() && a.out.is_dir() {
        bail!(
            "{}: is a folder; --out names the GGUF file to write",
            a.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let repo_name = (!a.model.exists()).then(|| {
        let id = a.model.to_string_lossy();
        let id = id.split_once('@').map_or(&*id, |(r, _)| r);
        id.rsplit('/').next().unwrap_or(id).to_owned()
    });
    let source = open_source(&path, a.name.clone().or(repo_name))?;
    let imatrix = match &a.imatrix {
        Some(p) => Some((p.clone(), Imatrix::read(p)?)),
        None => None,
    };
    let mut mix = MixOptions::new(a.ftype);
    mix.pure = a.pure;
    mix.output_tensor_type = a.output_tensor_type;
    mix.token_embedding_type = a.token_embedding_type;
    mix.quantize_output_tensor = !a.leave_output_tensor;
    let params = QuantizeParams {
        mix,
        imatrix: imatrix.as_ref().map(|(path, data)| ImatrixSource {
            path: path.clone(),
            data,
        }),
        allow_requantize: a.allow_requantize,
    };
    let progress = indicatif::ProgressBar::new(0);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tensors {msg}")
            .expect("static template"),
    );
    if a.json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = quantize_source(source.as_ref(), &a.out, &params, |t| {
        progress.set_length(t.total as u64);
        progress.set_position(t.index as u64 + 1);
        progress.set_message(format!("{} -> {}", t.name, t.to));
    })?;
    progress.finish_and_clear();
    let summary = summarize(&path, &a, &report, t0.elapsed().as_secs_f64());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    eprintln!(
        "wrote {} ({}, {} tensors: {}; {:.1} MB -> {:.1} MB, {:.2} bits per weight, {:.1} s)",
        summary.output,
        summary.ftype,
        summary.tensors,
        types.join(", "),
        summary.bytes_in as f64 / 1e6,
        summary.bytes_out as f64 / 1e6,
        summary.bits_per_weight,
        summary.seconds
    );
    if summary.fallback_tensors > 0 {
        eprintln!(
            "{} tensors had rows that are not a whole number of blocks of the type asked for and took llama.cpp's fallback type",
            summary.fallback_tensors
        );
    }
    if !summary.tensors_without_imatrix.is_empty() {
        eprintln!(
            "the importance matrix has no entry for {} quantized tensors ({}), quantized without one",
            summary.tensors_without_imatrix.len(),
            summary.tensors_without_imatrix.join(", ")
        );
    }
    Ok(())
}

fn summarize(input: &Path, a: &Args, r: &QuantizeReport, seconds: f64) -> Summary {
    let mut types = std::collections::BTreeMap::new();
    let mut n_weights = 0u64;
    for t in &r.tensors {
        *types.entry(t.to.name().to_owned()).or_insert(0) += 1;
        n_weights += t.dims.iter().product::<u64>();
    }
    let bytes_out: u64 = r.tensors.iter().map(|t| t.bytes_out).sum();
    Summary {
        input: input.display().to_string(),
        output: r.output.display().to_string(),
        ftype: a.ftype.name().to_owned(),
        tensors: r.tensors.len(),
        bytes_in: r.tensors.iter().map(|t| t.bytes_in).sum(),
        bytes_out,
        bits_per_weight: bytes_out as f64 * 8.0 / n_weights.max(1) as f64,
        seconds,
        fallback_tensors: r.n_fallback,
        tensors_without_imatrix: r.without_imatrix.clone(),
        types,
    }
}
