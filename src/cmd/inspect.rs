//! `quantize inspect`: what a model file or folder holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face folder.
    path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also list every metadata key in full (GGUF) or config.json (folders).
    #[arg(long)]
    all: bool,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    /// Storage type (ggml type or safetensors dtype).
    #[serde(rename = "type")]
    ty: String,
    /// Shape in PyTorch order (rows first).
    shape: Vec<u64>,
    bytes: u64,
    bits_per_weight: f64,
}

#[derive(Serialize)]
struct Report {
    path: String,
    format: String,
    metadata: BTreeMap<String, String>,
    tensors: Vec<TensorRow>,
    n_elements: u64,
    total_bytes: u64,
    bits_per_weight: f64,
    types: BTreeMap<String, usize>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let report = if a.path.is_dir() {
        folder_report(&a.path)?
    } else {
        gguf_report(&a.path)?
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{} ({})", report.path, report.format);
    for (k, v) in &report.metadata {
        if a.all || v.len() <= 120 {
            println!("  {k:<44} {v}");
        } else {
            println!(
                "  {k:<44} {}… ({} chars)",
                v.chars().take(100).collect::<String>(),
                v.len()
            );
        }
    }
    println!();
    println!(
        "  {:<48} {:<8} {:>16} {:>12} {:>7}",
        "tensor", "type", "shape", "bytes", "bpw"
    );
    for t in &report.tensors {
        let shape = t
            .shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("x");
        println!(
            "  {:<48} {:<8} {:>16} {:>12} {:>7.3}",
            t.name, t.ty, shape, t.bytes, t.bits_per_weight
        );
    }
    println!();
    let types: Vec<String> = report
        .types
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    println!(
        "  {} tensors ({}), {} elements, {:.2} MiB, {:.3} bits per weight",
        report.tensors.len(),
        types.join(", "),
        report.n_elements,
        report.total_bytes as f64 / (1 << 20) as f64,
        report.bits_per_weight
    );
    Ok(())
}

fn finish(
    path: &Path,
    format: String,
    metadata: BTreeMap<String, String>,
    tensors: Vec<TensorRow>,
) -> Report {
    let n_elements: u64 = tensors
        .iter()
        .map(|t| t.shape.iter().product::<u64>())
        .sum();
    let total_bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
    let mut types = BTreeMap::new();
    for t in &tensors {
        *types.entry(t.ty.clone()).or_insert(0) += 1;
    }
    Report {
        path: path.display().to_string(),
        format,
        metadata,
        n_elements,
        total_bytes,
        bits_per_weight: total_bytes as f64 * 8.0 / n_elements.max(1) as f64,
        types,
        tensors,
    }
}

fn gguf_report(path: &Path) -> anyhow::Result<Report> {
    let g = quant::gguf::GgufFile::open(path)?;
    let metadata = g
        .metadata
        .iter()
        .map(|(k, v)| {
            let s = match v {
                quant::gguf::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect();
    let tensors = g
        .tensors
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            ty: t.ty.name().to_owned(),
            shape: t.dims.iter().rev().copied().collect(),
            bytes: t.n_bytes(),
            bits_per_weight: t.ty.bits_per_weight(),
        })
        .collect();
    Ok(finish(
        path,
        format!("GGUF v{}", g.version),
        metadata,
        tensors,
    ))
}

fn folder_report(dir: &Path) -> anyhow::Result<Report> {
    let cfg_path = dir.join("config.json");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{}: not valid JSON", cfg_path.display()))?;
    let metadata = cfg
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    let st = runtime::loader::safetensors_dir::SafetensorsDir::open(dir)?;
    let mut names: Vec<&String> = st.names().collect();
    names.sort();
    let tensors = names
        .into_iter()
        .map(|n| {
            let e = st.get(n).expect("listed above");
            let elems: u64 = e.shape.iter().map(|d| *d as u64).product();
            let bytes = (e.end - e.start) as u64;
            TensorRow {
                name: n.clone(),
                ty: format!("{:?}", e.dtype),
                shape: e.shape.iter().map(|d| *d as u64).collect(),
                bytes,
                bits_per_weight: bytes as f64 * 8.0 / elems.max(1) as f64,
            }
        })
        .collect();
    let format = match cfg
        .pointer("/quantization_config/quant_method")
        .and_then(|m| m.as_str())
    {
        Some(m) => format!("Hugging Face folder, quantization {m}"),
        None => "Hugging Face folder".into(),
    };
    Ok(finish(dir, format, metadata, tensors))
}
