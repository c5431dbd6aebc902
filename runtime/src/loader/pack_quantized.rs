//! compressed-tensors "pack-quantized" linears (llm-compressor's W4A16 and W8A16 output).
//! [`load_linear`] reads one linear given its parsed weight arguments; [`PackQuantized`] is the
//! minimal `LinearFormat` for a folder with a single weight scheme (config_groups with one
//! group), until the compressed-tensors dispatcher takes it over.

use std::path::Path;

use kernels::SharedMatrix;
use quant::hf::pack_quantized::{unpack, words as packed_words, Packed, PackedArgs};
use safetensors::Dtype;

use super::group_quant::{bad_linear, floats, ints, matrix, words};
use super::hf::LinearFormat;
use super::safetensors_dir::SafetensorsDir;
use super::LoadError;

/// The weight arguments of one pack-quantized scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightArgs {
    pub bits: u32,
    /// None: the channel strategy (one group per row).
    pub group_size: Option<usize>,
    pub symmetric: bool,
    /// actorder "group": a `weight_g_idx` tensor per linear.
    pub g_idx: bool,
}

/// Loads the pack-quantized linear at `prefix` as a [rows × cols] matrix.
pub fn load_linear(
    st: &SafetensorsDir,
    prefix: &str,
    rows: usize,
    cols: usize,
    a: WeightArgs,
) -> Result<SharedMatrix, LoadError> {
    let g = a.group_size.unwrap_or(cols);
    if g == 0 || !cols.is_multiple_of(g) {
        return Err(bad_linear(
            st,
            prefix,
            format!("group size {g} does not divide the {cols} input features"),
        ));
    }
    let ng = cols / g;
    let shape_name = format!("{prefix}.weight_shape");
    if st.contains(&shape_name) {
        let e = st.expect(&shape_name, &[Dtype::I32, Dtype::I64], &[2])?;
        let b = st.bytes(e);
        let dims: Vec<i64> = if e.dtype == Dtype::I64 {
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        } else {
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect()
        };
        if dims != [rows as i64, cols as i64] {
            return Err(bad_linear(
                st,
                prefix,
                format!("weight_shape {dims:?}, expected [{rows}, {cols}]"),
            ));
        }
    }
    let packed = words(
        st,
        &format!("{prefix}.weight_packed"),
        &[rows, packed_words(cols, a.bits)],
    )?;
    let scale = floats(st, &format!("{prefix}.weight_scale"), &[rows, ng])?;
    let zp = if a.symmetric {
        None
    } else {
        Some(words(
            st,
            &format!("{prefix}.weight_zero_point"),
            &[packed_words(rows, a.bits), ng],
        )?)
    };
    let g_idx = if a.g_idx {
        Some(ints(st, &format!("{prefix}.weight_g_idx"), &[cols])?)
    } else {
        None
    };
    let p = Packed {
        weight_packed: &packed,
        weight_scale: &scale,
        weight_zero_point: zp.as_deref(),
        weight_g_idx: g_idx.as_deref(),
    };
    let args = PackedArgs {
        bits: a.bits,
        group_size: g,
        symmetric: a.symmetric,
    };
    matrix(st, prefix, unpack(&p, rows, cols, args))
}

/// A compressed-tensors folder whose linears all follow one pack-quantized weight scheme.
pub struct PackQuantized {
    args: WeightArgs,
}

impl PackQuantized {
    /// The scheme of a `quantization_config` with format "pack-quantized", or None for any
    /// other compressed-tensors format.
    pub fn from_config(
        config: &Path,
        q: &serde_json::Value,
    ) -> Result<Option<PackQuantized>, LoadError> {
        let bad = |field: &str, msg: String| LoadError::Unsupported {
            path: config.to_owned(),
            field: format!("quantization_config.{field}"),
            msg,
        };
        let groups = q
            .get("config_groups")
            .and_then(|g| g.as_object())
            .ok_or_else(|| bad("config_groups", "missing or not an object".into()))?;
        let (name, group) = match groups.iter().next() {
            Some(g) if groups.len() == 1 => g,
            _ => {
                return Err(bad(
                    "config_groups",
                    format!("{} groups (one supported)", groups.len()),
                ))
            }
        };
        fn format_of(v: &serde_json::Value) -> Option<&str> {
            v.get("format").and_then(|f| f.as_str())
        }
        if format_of(group).or(format_of(q)) != Some("pack-quantized") {
            return Ok(None);
        }
        let field = |f: &str| format!("config_groups.{name}.weights.{f}");
        let w = group
            .get("weights")
            .ok_or_else(|| bad(&field(""), "missing".into()))?;
        if w.get("type").and_then(|t| t.as_str()) != Some("int") {
            return Err(bad(
                &field("type"),
                format!("{} (int supported)", w["type"]),
            ));
        }
        let bits = w
            .get("num_bits")
            .and_then(|b| b.as_u64())
            .filter(|b| (1..=8).contains(b))
            .ok_or_else(|| bad(&field("num_bits"), format!("{}", w["num_bits"])))?
            as u32;
        let group_size = match w.get("strategy").and_then(|s| s.as_str()) {
            Some("channel") => None,
            Some("group") => Some(
                w.get("group_size")
                    .and_then(|g| g.as_u64())
                    .filter(|g| *g > 0)
                    .ok_or_else(|| bad(&field("group_size"), format!("{}", w["group_size"])))?
                    as usize,
            ),
            other => {
                return Err(bad(
                    &field("strategy"),
                    format!("{other:?} (group or channel supported)"),
                ))
            }
        };
        let g_idx = match w.get("actorder").and_then(|a| a.as_str()) {
            None | Some("weight") | Some("static") => false,
            Some("group") => true,
            Some(other) => return Err(bad(&field("actorder"), format!("{other:?}"))),
        };
        Ok(Some(PackQuantized {
            args: WeightArgs {
                bits,
                group_size,
                symmetric: w.get("symmetric").and_then(|s| s.as_bool()).unwrap_or(true),
                g_idx,
            },
        }))
    }
}

impl LinearFormat for PackQuantized {
    fn load(
        &self,
        st: &SafetensorsDir,
        prefix: &str,
        rows: usize,
        cols: usize,
    ) -> Result<SharedMatrix, LoadError> {
        if let Some(m) = super::group_quant::left_dense(st, prefix, "weight_packed", rows, cols) {
            return m;
        }
        load_linear(st, prefix, rows, cols, self.args)
    }
}
