//! Reference (scalar) dequantization of every supported ggml type, following ggml's
//! `dequantize_row_*` operation order so results are bit-identical to llama.cpp's.

use half::f16;

use super::blocks::*;
use super::types::{GgmlType, QK_K};

/// Why a row could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("{ty} row of {n} elements is not a whole number of {block}-element blocks")]
    RowNotBlockAligned {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty} row of {n} elements needs {want} bytes, got {got}")]
    WrongByteCount {
        ty: GgmlType,
        n: usize,
        want: usize,
        got: usize,
    },
    #[error("{ty} is an activation-only type and cannot be dequantized")]
    NotDequantizable { ty: GgmlType },
}

/// Checks that `src` holds exactly one row of `n` elements of type `ty`.
pub fn check_row(ty: GgmlType, src: &[u8], n: usize) -> Result<(), CodecError> {
    let want = ty.row_bytes(n).ok_or(CodecError::RowNotBlockAligned {
        ty,
        n,
        block: ty.block_size(),
    })?;
    if src.len() != want {
        return Err(CodecError::WrongByteCount {
            ty,
            n,
            want,
            got: src.len(),
        });
    }
    Ok(())
}

/// Decodes one row of `dst.len()` elements stored as `ty` in `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), CodecError> {
    check_row(ty, src, dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        GgmlType::F16 => match bytemuck::try_cast_slice::<u8, f16>(src) {
            // half converts whole slices with F16C where the CPU has it (exact either way)
            #[cfg(target_endian = "little")]
            Ok(halves) => {
                use half::slice::HalfFloatSliceExt;
                halves.convert_to_f32_slice(dst);
            }
            _ => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        },
        GgmlType::BF16 => {
            // half's conversion without its branch, so the loop vectorizes: the bits widen
            // exactly; a NaN gets its quiet bit.
            let widen = |b: u16| {
                let b = b as u32;
                let b = if b & 0x7fff > 0x7f80 { b | 0x40 } else { b };
                f32::from_bits(b << 16)
            };
            match bytemuck::try_cast_slice::<u8, u16>(src) {
                // Whole u16 loads where the row is aligned (safetensors data nearly always is).
                #[cfg(target_endian = "little")]
                Ok(bits) => {
                    for (d, b) in dst.iter_mut().zip(bits) {
                        *d = widen(*b);
                    }
                }
                _ => {
                    for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                        *d = widen(u16::from_le_bytes([c[0], c[1]]));
                    }
                }
            }
        }
        GgmlType::Q4_0 => each(src, dst, dequant_q4_0),
        GgmlType::Q4_1 => each(src, dst, dequant_q4_1),
        GgmlType::Q5_0 => each(src, dst, dequant_q5_0),
        GgmlType::Q5_1 => each(src, dst, dequant_q5_1),
        GgmlType::Q8_0 => each(src, dst, dequant_q8_0),
        GgmlType::Q2K => each(src, dst, dequant_q2k),
        GgmlType::Q3K => each(src, dst, dequant_q3k),
        GgmlType::Q4K => each(src, dst, dequant_q4k),
        GgmlType::Q5K => each(src, dst, dequant_q5k),
        GgmlType::Q6K => each(src, dst, dequant_q6k),
        GgmlType::Q8K => each(src, dst, dequant_q8k),
        GgmlType::IQ4NL => each(src, dst, dequant_iq4nl),
        GgmlType::IQ4XS => each(src, dst, dequant_iq4xs),
        GgmlType::Q8_1 => return Err(CodecError::NotDequantizable { ty }),
    }
    Ok(())
}

fn each<B: Block>(src: &[u8], dst: &mut [f32], f: fn(&B, &mut [f32])) {
    let bs = B::TYPE.block_size();
    for (b, y) in as_blocks::<B>(src).iter().zip(dst.chunks_exact_mut(bs)) {
        f(b, y);
    }
}

pub fn dequant_q4_0(b: &BlockQ4_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..16 {
        y[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

pub fn dequant_q4_1(b: &BlockQ4_1, y: &mut [f32]) {
    let (d, m) = (b.d.to_f32(), b.m.to_f32());
    for j in 0..16 {
        y[j] = (b.qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
    }
}

pub fn dequant_q5_0(b: &BlockQ5_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((b.qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((b.qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

pub fn dequant_q5_1(b: &BlockQ5_1, y: &mut [f32]) {
    let (d, m) = (b.d.to_f32(), b.m.to_f32());
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((b.qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = ((b.qs[j] >> 4) | h1) as f32 * d + m;
    }
}

pub fn dequant_q8_0(b: &BlockQ8_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (y, q) in y.iter_mut().zip(b.qs) {
        *y = q as f32 * d;
    }
}

pub fn dequant_q2k(b: &BlockQ2K, y: &mut [f32]) {
    let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
    let mut is = 0;
    let mut out = 0;
    for q in b.qs.chunks_exact(32) {
        for shift in (0..8).step_by(2) {
            for half in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    y[out] = dl * ((q[16 * half + l] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

pub fn dequant_q3k(b: &BlockQ3K, y: &mut [f32]) {
    let d_all = b.d.to_f32();
    let scales = q3k_scales(&b.scales);
    let mut m = 1u8;
    let mut is = 0;
    let mut out = 0;
    for q in b.qs.chunks_exact(32) {
        for shift in (0..8).step_by(2) {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let k = 16 * half + l;
                    let lo = ((q[k] >> shift) & 3) as i32;
                    let hi = if b.hmask[k] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (lo - hi) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

pub fn dequant_q4k(b: &BlockQ4K, y: &mut [f32]) {
    let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
    for (c, q) in b.qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

pub fn dequant_q5k(b: &BlockQ5K, y: &mut [f32]) {
    let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
    for (c, ql) in b.qs.chunks_exact(32).enumerate() {
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        let (sc1, m1) = scale_min_k4(2 * c, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
            y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

pub fn dequant_q6k(b: &BlockQ6K, y: &mut [f32]) {
    let d = b.d.to_f32();
    for n in 0..QK_K / 128 {
        let ql = &b.ql[64 * n..64 * n + 64];
        let qh = &b.qh[32 * n..32 * n + 32];
        let sc = &b.scales[8 * n..8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

pub fn dequant_q8k(b: &BlockQ8K, y: &mut [f32]) {
    for (y, q) in y.iter_mut().zip(b.qs) {
        *y = b.d * q as f32;
    }
}

pub fn dequant_iq4nl(b: &BlockIQ4NL, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..16 {
        y[j] = d * IQ4_VALUES[(b.qs[j] & 0xF) as usize] as f32;
        y[j + 16] = d * IQ4_VALUES[(b.qs[j] >> 4) as usize] as f32;
    }
}

pub fn dequant_iq4xs(b: &BlockIQ4XS, y: &mut [f32]) {
    let d = b.d.to_f32();
    for ib in 0..QK_K / 32 {
        let ls = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
            | ((((b.scales_h >> (2 * ib)) & 3) as i32) << 4);
        let dl = d * (ls - 32) as f32;
        let qs = &b.qs[16 * ib..16 * ib + 16];
        let y = &mut y[32 * ib..32 * ib + 32];
        for j in 0..16 {
            y[j] = dl * IQ4_VALUES[(qs[j] & 0xF) as usize] as f32;
            y[j + 16] = dl * IQ4_VALUES[(qs[j] >> 4) as usize] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_lengths() {
        let mut out = [0f32; 32];
        assert_eq!(
            dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out),
            Err(CodecError::WrongByteCount {
                ty: GgmlType::Q4_0,
                n: 32,
                want: 18,
                got: 17
            })
        );
        let mut out = [0f32; 31];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0u8; 18], &mut out),
            Err(CodecError::RowNotBlockAligned { .. })
        ));
    }

    #[test]
    fn hand_built_q4_0_block() {
        // d = 0.5, nibbles lo = j, hi = 15 - j
        let mut bytes = f16::from_f32(0.5).to_le_bytes().to_vec();
        bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &bytes, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(out[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn hand_built_q5_0_high_bits() {
        // all low nibbles 0; fifth bit set for every odd element → odd elements = 16-16 = 0
        let mut bytes = f16::from_f32(1.0).to_le_bytes().to_vec();
        bytes.extend(0xAAAA_AAAAu32.to_le_bytes());
        bytes.extend([0u8; 16]);
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q5_0, &bytes, &mut out).unwrap();
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, if j % 2 == 1 { 0.0 } else { -16.0 }, "element {j}");
        }
    }

    #[test]
    fn hand_built_q4_k_scales() {
        // sub-block j gets scale j+1 and min j, all quants 15 → y = d*(j+1)*15 - dmin*j
        let mut b = BlockQ4K {
            d: f16::from_f32(1.0),
            dmin: f16::from_f32(0.5),
            scales: [0; 12],
            qs: [0xFF; 128],
        };
        for j in 0..8u8 {
            let (sc, m) = (j + 1, j);
            if j < 4 {
                b.scales[j as usize] = sc;
                b.scales[j as usize + 4] = m;
            } else {
                b.scales[j as usize + 4] = (sc & 0xF) | ((m & 0xF) << 4);
                b.scales[j as usize - 4] |= (sc >> 4) << 6;
                b.scales[j as usize] |= (m >> 4) << 6;
            }
        }
        let mut out = [0f32; 256];
        dequantize_row(GgmlType::Q4K, bytemuck::bytes_of(&b), &mut out).unwrap();
        for j in 0..8 {
            let want = (j as f32 + 1.0) * 15.0 - 0.5 * j as f32;
            assert!(
                out[32 * j..32 * j + 32].iter().all(|v| *v == want),
                "sub-block {j}"
            );
        }
    }
}
