//! llama-quantize's last check on what it wrote (`ggml_validate_row_data`): no infinite or NaN
//! value among float data or among the fp16 scales of quantized blocks.

use half::{bf16, f16};

use crate::ggml::types::GgmlType;

/// Offsets of the fp16 scale fields within one block of `ty`.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4NL | IQ4XS => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4K | Q5K => &[0, 2],
        // d and dmin follow scales[16] and qs[64]
        Q2K => &[80, 82],
        Q3K => &[108],
        Q6K => &[208],
        F32 | F16 | BF16 | Q8K => &[],
    }
}

/// The index of the first element (float types) or block (quantized types) holding a
/// non-finite value, if any. `data` must be whole blocks.
pub fn first_non_finite(ty: GgmlType, data: &[u8]) -> Option<usize> {
    let f16_bad = |c: &[u8]| !f16::from_le_bytes([c[0], c[1]]).is_finite();
    match ty {
        GgmlType::F32 => data
            .chunks_exact(4)
            .position(|c| !f32::from_le_bytes(c.try_into().unwrap()).is_finite()),
        GgmlType::F16 => data.chunks_exact(2).position(f16_bad),
        GgmlType::BF16 => data
            .chunks_exact(2)
            .position(|c| !bf16::from_le_bytes([c[0], c[1]]).is_finite()),
        GgmlType::Q8K => data
            .chunks_exact(ty.type_size())
            .position(|b| !f32::from_le_bytes(b[..4].try_into().unwrap()).is_finite()),
        _ => {
            let fields = f16_fields(ty);
            data.chunks_exact(ty.type_size())
                .position(|b| fields.iter().any(|&o| f16_bad(&b[o..o + 2])))
        }
    }
}
