//! AutoAWQ's GEMM format (loaded by transformers' AwqConfig and vLLM's `awq` / `awq_marlin`),
//! anchors.md A1. Per linear, 4-bit only:
//! - `qweight` int32 [cols, rows/8]: for input i and word c, nibble k holds output channel
//!   8c + ORDER[k] (AutoAWQ's interleave for its dequantization kernel);
//! - `qzeros` int32 [groups, rows/8]: zero points, packed the same way, stored as themselves;
//! - `scales` f16 [groups, rows].
//!
//! Groups are contiguous (no g_idx).

use half::f16;
use serde_json::json;

use super::bitpack;
use crate::groupq::GroupQuant;
use crate::safetensors_out::Dtype;

/// Output channel (within a word's 8) of each nibble.
pub const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

fn check_geometry(rows: usize, cols: usize, bits: u32, group: usize) -> Result<(), String> {
    if bits != 4 {
        return Err(format!("AWQ GEMM stores 4 bits, not {bits}"));
    }
    if !rows.is_multiple_of(8) {
        return Err(format!("{rows} output features are not a multiple of 8"));
    }
    if group == 0 || !cols.is_multiple_of(group) {
        return Err(format!(
            "group size {group} does not divide the {cols} input features"
        ));
    }
    Ok(())
}

/// The tensors of one [rows × cols] linear, in the order [`pack`] returns their bytes.
pub fn tensor_shapes(
    rows: usize,
    cols: usize,
    group_size: usize,
) -> Vec<(&'static str, Dtype, Vec<usize>)> {
    let ng = cols / group_size;
    vec![
        ("qweight", Dtype::I32, vec![cols, rows / 8]),
        ("qzeros", Dtype::I32, vec![ng, rows / 8]),
        ("scales", Dtype::F16, vec![ng, rows]),
    ]
}

/// Packs one row of `rows` values (indexed by output channel) into rows/8 interleaved words.
fn pack_channels(value: impl Fn(usize) -> u8, rows: usize, out: &mut Vec<u32>) {
    for c in 0..rows / 8 {
        bitpack::pack(ORDER.iter().map(|&k| value(8 * c + k) as u32), 4, out);
    }
}

fn unpack_channels(words: &[u32], rows: usize, out: &mut [u8]) {
    let mut nib = Vec::with_capacity(8);
    for (c, w) in words.iter().enumerate().take(rows / 8) {
        nib.clear();
        bitpack::unpack(std::slice::from_ref(w), 4, 8, &mut nib);
        for (k, &o) in ORDER.iter().enumerate() {
            out[8 * c + o] = nib[k];
        }
    }
}

/// The little-endian bytes of qweight, qzeros and scales.
pub fn pack(q: &GroupQuant) -> Result<Vec<Vec<u8>>, String> {
    q.validate()?;
    check_geometry(q.rows, q.cols, q.bits, q.group_size)?;
    if q.g_idx.is_some() {
        return Err("AWQ groups are contiguous; this matrix has a column reorder (g_idx)".into());
    }
    if let Some(z) = q.zeros.iter().find(|z| **z > 15) {
        return Err(format!("zero point {z} does not fit 4 bits"));
    }
    let (rows, cols) = (q.rows, q.cols);
    let mut qweight = Vec::with_capacity(cols * rows / 8);
    for i in 0..cols {
        pack_channels(|o| q.codes[o * cols + i], rows, &mut qweight);
    }
    let mut qzeros = Vec::with_capacity(q.n_groups() * rows / 8);
    for g in 0..q.n_groups() {
        pack_channels(|o| q.zeros[g * rows + o], rows, &mut qzeros);
    }
    let scales: Vec<u8> = q
        .scales
        .iter()
        .flat_map(|s| f16::from_f32(*s).to_le_bytes())
        .collect();
    Ok(vec![
        bitpack::words_le(&qweight),
        bitpack::words_le(&qzeros),
        scales,
    ])
}

/// The unpacked form of one linear's tensors (words as loaded, f32 scales).
pub fn unpack(
    qweight: &[u32],
    qzeros: &[u32],
    scales: &[f32],
    rows: usize,
    cols: usize,
    group_size: usize,
) -> Result<GroupQuant, String> {
    check_geometry(rows, cols, 4, group_size)?;
    let ng = cols / group_size;
    let wpr = rows / 8;
    if qweight.len() != cols * wpr || qzeros.len() != ng * wpr || scales.len() != ng * rows {
        return Err(format!(
            "qweight/qzeros/scales hold {}/{}/{} values, expected {}/{}/{}",
            qweight.len(),
            qzeros.len(),
            scales.len(),
            cols * wpr,
            ng * wpr,
            ng * rows
        ));
    }
    let mut codes = vec![0u8; rows * cols];
    let mut col = vec![0u8; rows];
    for i in 0..cols {
        unpack_channels(&qweight[i * wpr..(i + 1) * wpr], rows, &mut col);
        for (o, v) in col.iter().enumerate() {
            codes[o * cols + i] = *v;
        }
    }
    let mut zeros = vec![0u8; ng * rows];
    for g in 0..ng {
        unpack_channels(
            &qzeros[g * wpr..(g + 1) * wpr],
            rows,
            &mut zeros[g * rows..(g + 1) * rows],
        );
    }
    let q = GroupQuant {
        rows,
        cols,
        bits: 4,
        group_size,
        codes,
        scales: scales.to_vec(),
        zeros,
        g_idx: None,
    };
    q.validate()?;
    Ok(q)
}

/// config.json's `quantization_config` for an AutoAWQ GEMM artifact.
pub fn quantization_config(group_size: usize) -> serde_json::Value {
    json!({
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": true,
        "version": "gemm",
        "modules_to_not_convert": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groupq::{quantize_rtn, FitRule};

    #[test]
    fn nibbles_follow_autoawq_order_and_round_trip() {
        let (rows, cols) = (16, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1013) as f32 - 400.0) / 600.0)
            .collect();
        let q = quantize_rtn(&w, rows, cols, 4, 32, FitRule::Awq);
        let t = pack(&q).unwrap();
        let word = |i: usize, c: usize| {
            u32::from_le_bytes(t[0][4 * (i * 2 + c)..][..4].try_into().unwrap())
        };
        // Unpacking as AutoAWQ does: shifts 0, 4, .., 28, then AWQ_REVERSE_ORDER.
        const REVERSE: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
        for i in [0, 17, 63] {
            for c in 0..2 {
                let nibbles: Vec<u32> = (0..8).map(|k| (word(i, c) >> (4 * k)) & 15).collect();
                for o in 0..8 {
                    assert_eq!(nibbles[REVERSE[o]], q.codes[(8 * c + o) * cols + i] as u32);
                }
            }
        }
        let words = |b: &[u8]| -> Vec<u32> {
            b.chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let scales: Vec<f32> = t[2]
            .chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let back = unpack(&words(&t[0]), &words(&t[1]), &scales, rows, cols, 32).unwrap();
        assert!(back == q, "round trip differs");
        assert!(unpack(&words(&t[0]), &words(&t[1]), &scales, rows, cols, 24).is_err());
    }
}
