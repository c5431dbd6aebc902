//! The GPTQ checkpoint format (AutoGPTQ, GPTQModel; loaded by transformers and by vLLM's `gptq`
//! and `gptq_marlin`), anchors.md A2. Per linear:
//! - `qweight` int32 [cols·bits/32, rows]: each output column's codes packed along the input
//!   dimension (bitpack's stream: 4-bit word r holds inputs 8r..8r+7, input 8r+j at bits 4j);
//! - `qzeros` int32 [groups, rows·bits/32]: zero points packed along the output dimension, stored
//!   as zero − 1 in the "gptq" (v1) checkpoint format, as the zero itself in "gptq_v2";
//! - `scales` f16 [groups, rows]; `g_idx` int32 [cols], each input column's group.

use half::f16;
use serde_json::json;

use super::bitpack;
use crate::groupq::GroupQuant;
use crate::safetensors_out::Dtype;

/// The widths vLLM and transformers load.
pub const BITS: [u32; 4] = [2, 3, 4, 8];

/// How zero points are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `"gptq"`: zero − 1 (what AutoGPTQ wrote and every loader reads).
    V1,
    /// `"gptq_v2"`: the zero itself (GPTQModel's internal format).
    V2,
}

impl CheckpointFormat {
    pub fn from_name(s: &str) -> Option<CheckpointFormat> {
        match s {
            "gptq" => Some(CheckpointFormat::V1),
            "gptq_v2" => Some(CheckpointFormat::V2),
            _ => None,
        }
    }

    fn offset(self) -> u32 {
        match self {
            CheckpointFormat::V1 => 1,
            CheckpointFormat::V2 => 0,
        }
    }
}

/// Why a matrix cannot be stored in, or read from, the format.
fn check_geometry(rows: usize, cols: usize, bits: u32) -> Result<(), String> {
    if !BITS.contains(&bits) {
        return Err(format!("GPTQ stores 2, 3, 4 or 8 bits, not {bits}"));
    }
    for (what, n) in [("input features", cols), ("output features", rows)] {
        if !(n * bits as usize).is_multiple_of(32) {
            return Err(format!(
                "{n} {what} do not fill whole 32-bit words at {bits} bits"
            ));
        }
    }
    Ok(())
}

/// The tensors of one [rows × cols] linear, in the order [`pack`] returns their bytes.
pub fn tensor_shapes(
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: usize,
) -> Vec<(&'static str, Dtype, Vec<usize>)> {
    let (b, ng) = (bits as usize, cols.div_ceil(group_size));
    vec![
        ("qweight", Dtype::I32, vec![cols * b / 32, rows]),
        ("qzeros", Dtype::I32, vec![ng, rows * b / 32]),
        ("scales", Dtype::F16, vec![ng, rows]),
        ("g_idx", Dtype::I32, vec![cols]),
    ]
}

/// The little-endian bytes of qweight, qzeros, scales and g_idx (v1 zero points).
pub fn pack(q: &GroupQuant) -> Result<Vec<Vec<u8>>, String> {
    q.validate()?;
    let (rows, cols, bits) = (q.rows, q.cols, q.bits);
    check_geometry(rows, cols, bits)?;
    if let Some(z) = q.zeros.iter().find(|z| **z == 0 || **z as u32 > q.maxq()) {
        return Err(format!(
            "zero point {z} cannot be stored as zero − 1 in {bits} bits"
        ));
    }
    let words_per_col = cols * bits as usize / 32;
    let mut qweight = vec![0u32; words_per_col * rows];
    let mut col = Vec::with_capacity(words_per_col);
    for r in 0..rows {
        col.clear();
        bitpack::pack(
            q.codes[r * cols..(r + 1) * cols].iter().map(|c| *c as u32),
            bits,
            &mut col,
        );
        for (k, w) in col.iter().enumerate() {
            qweight[k * rows + r] = *w;
        }
    }
    let ng = q.n_groups();
    let mut qzeros = Vec::with_capacity(ng * rows * bits as usize / 32);
    for g in 0..ng {
        let zs = &q.zeros[g * rows..(g + 1) * rows];
        bitpack::pack(zs.iter().map(|z| *z as u32 - 1), bits, &mut qzeros);
    }
    let scales: Vec<u8> = q
        .scales
        .iter()
        .flat_map(|s| f16::from_f32(*s).to_le_bytes())
        .collect();
    let g_idx: Vec<u8> = (0..cols)
        .flat_map(|c| (q.group_of(c) as i32).to_le_bytes())
        .collect();
    Ok(vec![
        bitpack::words_le(&qweight),
        bitpack::words_le(&qzeros),
        scales,
        g_idx,
    ])
}

/// The unpacked form of one linear's tensors (values as loaded: words, f32 scales, g_idx).
#[allow(clippy::too_many_arguments)]
pub fn unpack(
    qweight: &[u32],
    qzeros: &[u32],
    scales: &[f32],
    g_idx: Option<&[i32]>,
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: usize,
    format: CheckpointFormat,
) -> Result<GroupQuant, String> {
    check_geometry(rows, cols, bits)?;
    let ng = cols.div_ceil(group_size.max(1));
    let (wpc, wpz) = (cols * bits as usize / 32, rows * bits as usize / 32);
    if qweight.len() != wpc * rows || qzeros.len() != ng * wpz || scales.len() != ng * rows {
        return Err(format!(
            "qweight/qzeros/scales hold {}/{}/{} values, expected {}/{}/{}",
            qweight.len(),
            qzeros.len(),
            scales.len(),
            wpc * rows,
            ng * wpz,
            ng * rows
        ));
    }
    let mut codes = Vec::with_capacity(rows * cols);
    let mut col = vec![0u32; wpc];
    for r in 0..rows {
        for (k, w) in col.iter_mut().enumerate() {
            *w = qweight[k * rows + r];
        }
        bitpack::unpack(&col, bits, cols, &mut codes);
    }
    let mut stored = Vec::with_capacity(ng * rows);
    for g in 0..ng {
        bitpack::unpack(&qzeros[g * wpz..(g + 1) * wpz], bits, rows, &mut stored);
    }
    let zeros = stored
        .iter()
        .map(|z| {
            u8::try_from(*z as u32 + format.offset())
                .map_err(|_| format!("zero point {} + 1 does not fit 8 bits", z))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    let g_idx = match g_idx {
        None => None,
        Some(g) => {
            if g.len() != cols {
                return Err(format!("g_idx has {} entries for {cols} columns", g.len()));
            }
            let g: Vec<u32> = g
                .iter()
                .map(|x| u32::try_from(*x).map_err(|_| format!("negative g_idx {x}")))
                .collect::<Result<_, _>>()?;
            // The plain c / group order needs no index.
            let trivial = g
                .iter()
                .enumerate()
                .all(|(c, x)| *x as usize == c / group_size);
            (!trivial).then_some(g)
        }
    };
    let q = GroupQuant {
        rows,
        cols,
        bits,
        group_size,
        codes,
        scales: scales.to_vec(),
        zeros,
        g_idx,
    };
    q.validate()?;
    Ok(q)
}

/// What config.json's `quantization_config` (and quantize_config.json) says about a GPTQ
/// artifact. `sym` and `desc_act` are always written: vLLM picks its Marlin kernels only when
/// both are present.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqSettings {
    pub bits: u32,
    /// None: one group per output row (written as -1).
    pub group_size: Option<usize>,
    pub sym: bool,
    pub desc_act: bool,
    pub static_groups: bool,
    pub damp_percent: f64,
    pub true_sequential: bool,
}

impl GptqSettings {
    pub fn quantization_config(&self, quantizer: &str) -> serde_json::Value {
        json!({
            "quant_method": "gptq",
            "bits": self.bits,
            "group_size": self.group_size.map_or(-1, |g| g as i64),
            "sym": self.sym,
            "desc_act": self.desc_act,
            "static_groups": self.static_groups,
            "damp_percent": self.damp_percent,
            "true_sequential": self.true_sequential,
            "checkpoint_format": "gptq",
            "pack_dtype": "int32",
            "lm_head": false,
            "meta": {"quantizer": [quantizer]},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groupq::{quantize_rtn, FitRule};

    fn sample(rows: usize, cols: usize, bits: u32, g: usize, sym: bool) -> GroupQuant {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1013) as f32 - 506.0) / 600.0)
            .collect();
        quantize_rtn(&w, rows, cols, bits, g, FitRule::Gptq { sym })
    }

    #[test]
    fn four_bit_words_hold_eight_inputs_in_order() {
        let q = sample(32, 64, 4, 32, true);
        let t = pack(&q).unwrap();
        let word = |k: usize, r: usize| {
            u32::from_le_bytes(t[0][4 * (k * 32 + r)..][..4].try_into().unwrap())
        };
        for r in [0, 5, 31] {
            for c in [0, 9, 63] {
                assert_eq!(
                    (word(c / 8, r) >> (4 * (c % 8))) & 15,
                    q.codes[r * 64 + c] as u32
                );
            }
        }
        // Symmetric 4-bit: every zero is 8, stored as 7.
        assert!(t[1].chunks(4).all(|w| w == 0x7777_7777u32.to_le_bytes()));
    }

    #[test]
    fn pack_then_unpack_is_the_identity() {
        for (bits, g, sym) in [
            (4, 32, false),
            (3, 64, true),
            (2, 32, false),
            (8, 128, true),
        ] {
            let mut q = sample(64, 128, bits, g, sym);
            if g < 128 {
                q.g_idx = Some((0..128).map(|c| ((c * 5) % 128 / g) as u32).collect());
            }
            let t = pack(&q).unwrap();
            let words = |b: &[u8]| -> Vec<u32> {
                b.chunks(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            let scales: Vec<f32> = t[2]
                .chunks(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            let g_idx: Vec<i32> = words(&t[3]).iter().map(|w| *w as i32).collect();
            let back = unpack(
                &words(&t[0]),
                &words(&t[1]),
                &scales,
                Some(&g_idx),
                64,
                128,
                bits,
                g,
                CheckpointFormat::V1,
            )
            .unwrap();
            assert!(back == q, "{bits} bits: round trip differs");
        }
    }

    #[test]
    fn refuses_what_the_format_cannot_hold() {
        assert!(pack(&sample(4, 64, 4, 32, true)).is_err());
        let mut q = sample(32, 64, 4, 32, false);
        q.zeros[0] = 0;
        assert!(pack(&q).unwrap_err().contains("zero − 1"));
        assert!(check_geometry(32, 64, 5).is_err());
    }
}
