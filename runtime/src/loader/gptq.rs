//! GPTQ folders (quant_method "gptq": AutoGPTQ, GPTQModel and this project's `quantize gptq`):
//! qweight/qzeros/scales/g_idx per linear, checkpoint format "gptq" (zero points stored minus
//! one) or "gptq_v2".

use std::path::Path;

use kernels::SharedMatrix;
use quant::hf::gptq::{unpack, CheckpointFormat};

use super::group_quant::{floats, group_size, ints, matrix, words};
use super::hf::LinearFormat;
use super::safetensors_dir::SafetensorsDir;
use super::LoadError;

pub struct Gptq {
    bits: u32,
    /// None: one group per row.
    group_size: Option<usize>,
    format: CheckpointFormat,
}

impl Gptq {
    pub fn from_config(config: &Path, q: &serde_json::Value) -> Result<Gptq, LoadError> {
        let bad = |field: &str, msg: String| LoadError::Unsupported {
            path: config.to_owned(),
            field: format!("quantization_config.{field}"),
            msg,
        };
        let bits =
            q.get("bits")
                .and_then(|b| b.as_u64())
                .ok_or_else(|| bad("bits", "missing or not an integer".into()))? as u32;
        if !quant::hf::gptq::BITS.contains(&bits) {
            return Err(bad("bits", format!("{bits} (2, 3, 4 or 8 supported)")));
        }
        let group_size = group_size(q.get("group_size")).map_err(|m| bad("group_size", m))?;
        let name = q
            .get("checkpoint_format")
            .and_then(|f| f.as_str())
            .unwrap_or("gptq");
        let format = CheckpointFormat::from_name(name).ok_or_else(|| {
            bad(
                "checkpoint_format",
                format!("{name:?} (\"gptq\" or \"gptq_v2\" supported)"),
            )
        })?;
        Ok(Gptq {
            bits,
            group_size,
            format,
        })
    }
}

impl LinearFormat for Gptq {
    fn load(
        &self,
        st: &SafetensorsDir,
        prefix: &str,
        rows: usize,
        cols: usize,
    ) -> Result<SharedMatrix, LoadError> {
        if let Some(m) = super::group_quant::left_dense(st, prefix, "qweight", rows, cols) {
            return m;
        }
        let qweight = format!("{prefix}.qweight");
        let (b, g) = (self.bits as usize, self.group_size.unwrap_or(cols));
        let ng = cols.div_ceil(g);
        let qw = words(st, &qweight, &[cols * b / 32, rows])?;
        let qz = words(st, &format!("{prefix}.qzeros"), &[ng, rows * b / 32])?;
        let scales = floats(st, &format!("{prefix}.scales"), &[ng, rows])?;
        let g_idx_name = format!("{prefix}.g_idx");
        let g_idx = if st.contains(&g_idx_name) {
            Some(ints(st, &g_idx_name, &[cols])?)
        } else {
            None
        };
        let q = unpack(
            &qw,
            &qz,
            &scales,
            g_idx.as_deref(),
            rows,
            cols,
            self.bits,
            g,
            self.format,
        );
        matrix(st, prefix, q)
    }
}
