//! compressed-tensors' "pack-quantized" weights (llm-compressor's W4A16 and W8A16 output;
//! vLLM `compressed-tensors`), anchors.md A3. Per linear, in nn.Linear orientation:
//! - `weight_packed` int32 [rows, ceil(cols·bits/32)]: each row's codes as a bitpack stream;
//!   codes are the signed values plus 2^(bits−1);
//! - `weight_scale` [rows, groups] in the model's dtype;
//! - `weight_zero_point` int32 [ceil(rows·bits/32), groups], only when asymmetric: zero points
//!   (signed, plus 2^(bits−1)) packed along the output dimension;
//! - `weight_g_idx` int32 [cols], only with act-order "group";
//! - `weight_shape` [2] = [rows, cols].

use super::bitpack;
use crate::groupq::GroupQuant;

/// The quantization arguments of a weight (compressed-tensors QuantizationArgs) that decide its
/// layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedArgs {
    pub bits: u32,
    /// Input columns per group (`cols` for the channel strategy).
    pub group_size: usize,
    pub symmetric: bool,
}

/// The packed tensors of one linear as loaded (int32 words as u32, scales as f32).
pub struct Packed<'a> {
    pub weight_packed: &'a [u32],
    pub weight_scale: &'a [f32],
    pub weight_zero_point: Option<&'a [u32]>,
    pub weight_g_idx: Option<&'a [i32]>,
}

/// Words per row of `weight_packed` and per group column of `weight_zero_point`.
pub fn words(n: usize, bits: u32) -> usize {
    bitpack::packed_words(n, bits)
}

/// Reads one linear into the common unpacked form.
pub fn unpack(p: &Packed, rows: usize, cols: usize, a: PackedArgs) -> Result<GroupQuant, String> {
    if !(1..=8).contains(&a.bits) {
        return Err(format!("{} bits (1 to 8 supported)", a.bits));
    }
    if a.group_size == 0 || !cols.is_multiple_of(a.group_size) {
        return Err(format!(
            "group size {} does not divide the {cols} input features",
            a.group_size
        ));
    }
    let ng = cols / a.group_size;
    let (wpr, wpz) = (words(cols, a.bits), words(rows, a.bits));
    if p.weight_packed.len() != rows * wpr {
        return Err(format!(
            "weight_packed holds {} words, expected {rows} x {wpr}",
            p.weight_packed.len()
        ));
    }
    if p.weight_scale.len() != rows * ng {
        return Err(format!(
            "weight_scale holds {} values, expected {rows} x {ng}",
            p.weight_scale.len()
        ));
    }
    let mut codes = Vec::with_capacity(rows * cols);
    for row in p.weight_packed.chunks_exact(wpr) {
        bitpack::unpack(row, a.bits, cols, &mut codes);
    }
    let mid = 1u8 << (a.bits - 1);
    let zeros = match (a.symmetric, p.weight_zero_point) {
        (true, _) => vec![mid; ng * rows],
        (false, None) => return Err("asymmetric weights without weight_zero_point".into()),
        (false, Some(zp)) => {
            if zp.len() != wpz * ng {
                return Err(format!(
                    "weight_zero_point holds {} words, expected {wpz} x {ng}",
                    zp.len()
                ));
            }
            // Packed along dim 0: column g of the [wpz, ng] words is group g's stream.
            let mut zeros = Vec::with_capacity(ng * rows);
            let mut col = vec![0u32; wpz];
            for g in 0..ng {
                for (k, w) in col.iter_mut().enumerate() {
                    *w = zp[k * ng + g];
                }
                bitpack::unpack(&col, a.bits, rows, &mut zeros);
            }
            zeros
        }
    };
    // Scales: [rows, groups] to the group-major order of GroupQuant.
    let mut scales = vec![0f32; ng * rows];
    for r in 0..rows {
        for g in 0..ng {
            scales[g * rows + r] = p.weight_scale[r * ng + g];
        }
    }
    let g_idx = match p.weight_g_idx {
        None => None,
        Some(g) => {
            if g.len() != cols {
                return Err(format!(
                    "weight_g_idx has {} entries for {cols} columns",
                    g.len()
                ));
            }
            Some(
                g.iter()
                    .map(|x| u32::try_from(*x).map_err(|_| format!("negative g_idx {x}")))
                    .collect::<Result<Vec<u32>, String>>()?,
            )
        }
    };
    let q = GroupQuant {
        rows,
        cols,
        bits: a.bits,
        group_size: a.group_size,
        codes,
        scales,
        zeros,
        g_idx,
    };
    q.validate()?;
    Ok(q)
}

/// The packed words of `q` (weight_packed, and weight_zero_point when asymmetric), as
/// compressed-tensors' pack_to_int32 lays them out.
pub fn pack(q: &GroupQuant, symmetric: bool) -> (Vec<u32>, Option<Vec<u32>>) {
    let mut packed = Vec::with_capacity(q.rows * words(q.cols, q.bits));
    for row in q.codes.chunks_exact(q.cols) {
        bitpack::pack(row.iter().map(|c| *c as u32), q.bits, &mut packed);
    }
    if symmetric {
        return (packed, None);
    }
    let (ng, wpz) = (q.n_groups(), words(q.rows, q.bits));
    let mut zp = vec![0u32; wpz * ng];
    let mut col = Vec::with_capacity(wpz);
    for g in 0..ng {
        col.clear();
        bitpack::pack(
            q.zeros[g * q.rows..(g + 1) * q.rows]
                .iter()
                .map(|z| *z as u32),
            q.bits,
            &mut col,
        );
        for (k, w) in col.iter().enumerate() {
            zp[k * ng + g] = *w;
        }
    }
    (packed, Some(zp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groupq::{quantize_rtn, FitRule};

    #[test]
    fn round_trips_symmetric_and_asymmetric() {
        let (rows, cols) = (12, 96);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1013) as f32 - 450.0) / 600.0)
            .collect();
        for (sym, g) in [(true, 32), (false, 48), (false, 96)] {
            let mut q = quantize_rtn(&w, rows, cols, 4, g, FitRule::Gptq { sym });
            if !sym {
                q.zeros[3] = 0;
            }
            let (packed, zp) = pack(&q, sym);
            let scales: Vec<f32> = (0..rows * (cols / g))
                .map(|i| q.scales[(i % (cols / g)) * rows + i / (cols / g)])
                .collect();
            let p = Packed {
                weight_packed: &packed,
                weight_scale: &scales,
                weight_zero_point: zp.as_deref(),
                weight_g_idx: None,
            };
            let args = PackedArgs {
                bits: 4,
                group_size: g,
                symmetric: sym,
            };
            assert!(
                unpack(&p, rows, cols, args).unwrap() == q,
                "{sym} {g}: round trip differs"
            );
            // Word 0 of row 0: columns 0..8 at bits 4k.
            for k in 0..8 {
                assert_eq!((packed[0] >> (4 * k)) & 15, q.codes[k] as u32);
            }
        }
    }
}
