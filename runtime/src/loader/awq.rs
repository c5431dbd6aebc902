//! AWQ folders (quant_method "awq", AutoAWQ's GEMM version, as `quantize awq` writes them).

use std::path::Path;

use kernels::SharedMatrix;
use quant::hf::awq::unpack;

use super::group_quant::{floats, group_size, matrix, words};
use super::hf::LinearFormat;
use super::safetensors_dir::SafetensorsDir;
use super::LoadError;

pub struct Awq {
    /// None: one group per row.
    group_size: Option<usize>,
}

impl Awq {
    pub fn from_config(config: &Path, q: &serde_json::Value) -> Result<Awq, LoadError> {
        let bad = |field: &str, msg: String| LoadError::Unsupported {
            path: config.to_owned(),
            field: format!("quantization_config.{field}"),
            msg,
        };
        // AutoAWQ's quant_config.json spells them w_bit and q_group_size.
        let get = |a: &str, b: &str| q.get(a).or_else(|| q.get(b));
        match get("bits", "w_bit").and_then(|b| b.as_u64()) {
            Some(4) => {}
            other => return Err(bad("bits", format!("{other:?} (AWQ GEMM stores 4 bits)"))),
        }
        let version = get("version", "version")
            .and_then(|v| v.as_str())
            .unwrap_or("gemm");
        if !version.eq_ignore_ascii_case("gemm") {
            return Err(bad(
                "version",
                format!("{version:?} (the GEMM layout is supported)"),
            ));
        }
        if get("zero_point", "zero_point").and_then(|z| z.as_bool()) == Some(false) {
            return Err(bad(
                "zero_point",
                "false (AWQ GEMM with zero points is supported)".into(),
            ));
        }
        let group_size =
            group_size(get("group_size", "q_group_size")).map_err(|m| bad("group_size", m))?;
        Ok(Awq { group_size })
    }
}

impl LinearFormat for Awq {
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
        let g = self.group_size.unwrap_or(cols);
        if g == 0 || !cols.is_multiple_of(g) || !rows.is_multiple_of(8) {
            return Err(super::group_quant::bad_linear(
                st,
                prefix,
                format!("[{rows} x {cols}] does not fit AWQ GEMM groups of {g}"),
            ));
        }
        let ng = cols / g;
        let qw = words(st, &qweight, &[cols, rows / 8])?;
        let qz = words(st, &format!("{prefix}.qzeros"), &[ng, rows / 8])?;
        let scales = floats(st, &format!("{prefix}.scales"), &[ng, rows])?;
        matrix(st, prefix, unpack(&qw, &qz, &scales, rows, cols, g))
    }
}
