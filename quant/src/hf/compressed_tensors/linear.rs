//! One linear in each scheme: the tensors that replace its `weight` (names, dtypes, shapes, as
//! llm-compressor writes them) and their bytes, quantized from the f32 weight.

use rayon::prelude::*;

use super::{pack_int8_row, packed_int8_cols, ScaleDtype, Scheme, FP8_BLOCK};
use crate::fp8;
use crate::int8;
use crate::safetensors_out::Dtype;

/// One tensor of a quantized linear: `<module>.<suffix>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearTensorSpec {
    pub suffix: &'static str,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl LinearTensorSpec {
    fn new(suffix: &'static str, dtype: Dtype, shape: Vec<usize>) -> LinearTensorSpec {
        LinearTensorSpec {
            suffix,
            dtype,
            shape,
        }
    }
}

impl Scheme {
    /// The tensors of a [rows × cols] linear, in the order [`quantize_linear`] returns them.
    pub fn linear_tensors(
        self,
        rows: usize,
        cols: usize,
        dtype: ScaleDtype,
    ) -> Vec<LinearTensorSpec> {
        let sd = dtype.safetensors();
        let weight = |d| LinearTensorSpec::new("weight", d, vec![rows, cols]);
        let scale = |shape| LinearTensorSpec::new("weight_scale", sd, shape);
        match self {
            Scheme::Fp8Dynamic => vec![weight(Dtype::F8E4M3), scale(vec![rows, 1])],
            Scheme::Fp8Static => vec![
                weight(Dtype::F8E4M3),
                scale(vec![1]),
                LinearTensorSpec::new("input_scale", sd, vec![1]),
            ],
            Scheme::Fp8Block => vec![
                weight(Dtype::F8E4M3),
                scale(vec![rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)]),
            ],
            Scheme::W8A8 => vec![weight(Dtype::I8), scale(vec![rows, 1])],
            Scheme::W8A16 => vec![
                LinearTensorSpec::new(
                    "weight_packed",
                    Dtype::I32,
                    vec![rows, packed_int8_cols(cols)],
                ),
                scale(vec![rows, 1]),
                LinearTensorSpec::new("weight_shape", Dtype::I64, vec![2]),
            ],
        }
    }
}

/// What static FP8 needs from outside the weight: the largest |w| over the linears vLLM fuses
/// with this one (q/k/v, gate/up), so they share one weight scale, and the calibrated
/// activation scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StaticScales {
    pub weight_amax: f32,
    pub input_scale: f32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinearQuantError {
    #[error("weight [{row}, {col}] is {value}")]
    NonFiniteWeight { row: usize, col: usize, value: f32 },
    #[error("{what} {value} does not fit the scale dtype {dtype:?}")]
    ScaleOverflow {
        what: &'static str,
        value: f32,
        dtype: ScaleDtype,
    },
    #[error("static FP8 needs the fused weight maximum and the calibrated input scale")]
    MissingStaticScales,
}

fn check_scale(what: &'static str, s: f32, dtype: ScaleDtype) -> Result<(), LinearQuantError> {
    if s.is_finite() {
        Ok(())
    } else {
        Err(LinearQuantError::ScaleOverflow {
            what,
            value: s,
            dtype,
        })
    }
}

fn amax(w: &[f32]) -> f32 {
    w.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Quantizes the row-major [rows × cols] weight `w` for `scheme`, scales stored in `dtype`;
/// returns the bytes of each tensor of [`Scheme::linear_tensors`], in that order.
pub fn quantize_linear(
    scheme: Scheme,
    w: &[f32],
    rows: usize,
    cols: usize,
    dtype: ScaleDtype,
    statics: Option<StaticScales>,
) -> Result<Vec<Vec<u8>>, LinearQuantError> {
    assert_eq!(w.len(), rows * cols, "weight is not rows × cols");
    if let Some(i) = crate::first_nan_or_inf(w) {
        return Err(LinearQuantError::NonFiniteWeight {
            row: i / cols,
            col: i % cols,
            value: w[i],
        });
    }
    let rows_of = |f: &(dyn Fn(&[f32], &mut [u8]) -> f32 + Sync)| -> (Vec<u8>, Vec<f32>) {
        let mut q = vec![0u8; rows * cols];
        let scales: Vec<f32> = q
            .par_chunks_mut(cols)
            .zip(w.par_chunks(cols))
            .map(|(q, w)| f(w, q))
            .collect();
        (q, scales)
    };
    let checked = |what, scales: &[f32]| -> Result<Vec<u8>, LinearQuantError> {
        for s in scales {
            check_scale(what, *s, dtype)?;
        }
        Ok(dtype.encode(scales))
    };
    Ok(match scheme {
        Scheme::Fp8Dynamic => {
            let (q, s) = rows_of(&|w, q| {
                let s = fp8::weight_scale(amax(w), dtype);
                for (q, &v) in q.iter_mut().zip(w) {
                    *q = fp8::quantize_weight(v, s, dtype);
                }
                s
            });
            vec![q, checked("weight scale", &s)?]
        }
        Scheme::Fp8Static => {
            let st = statics.ok_or(LinearQuantError::MissingStaticScales)?;
            let s = fp8::weight_scale(st.weight_amax.max(amax(w)), dtype);
            check_scale("weight scale", s, dtype)?;
            let (q, _) = rows_of(&|w, q| {
                for (q, &v) in q.iter_mut().zip(w) {
                    *q = fp8::quantize_weight(v, s, dtype);
                }
                s
            });
            vec![
                q,
                dtype.encode(&[s]),
                checked("input scale", &[st.input_scale])?,
            ]
        }
        Scheme::Fp8Block => {
            let (nbr, nbc) = (rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK));
            let scales: Vec<f32> = (0..nbr * nbc)
                .into_par_iter()
                .map(|b| {
                    let (r0, c0) = ((b / nbc) * FP8_BLOCK, (b % nbc) * FP8_BLOCK);
                    let m = (r0..(r0 + FP8_BLOCK).min(rows))
                        .map(|r| amax(&w[r * cols + c0..r * cols + (c0 + FP8_BLOCK).min(cols)]))
                        .fold(0f32, f32::max);
                    fp8::weight_scale(m, dtype)
                })
                .collect();
            let s = &scales;
            let mut q = vec![0u8; rows * cols];
            q.par_chunks_mut(cols)
                .zip(w.par_chunks(cols))
                .enumerate()
                .for_each(|(r, (q, w))| {
                    for (c, (q, &v)) in q.iter_mut().zip(w).enumerate() {
                        *q = fp8::quantize_weight(
                            v,
                            s[(r / FP8_BLOCK) * nbc + c / FP8_BLOCK],
                            dtype,
                        );
                    }
                });
            vec![q, checked("block weight scale", &scales)?]
        }
        Scheme::W8A8 | Scheme::W8A16 => {
            let (q, s) = rows_of(&|w, q| int8::quantize_row(w, dtype, bytemuck::cast_slice_mut(q)));
            let scales = checked("weight scale", &s)?;
            if scheme == Scheme::W8A8 {
                vec![q, scales]
            } else {
                let mut packed = Vec::with_capacity(rows * 4 * packed_int8_cols(cols));
                for row in q.chunks_exact(cols) {
                    pack_int8_row(bytemuck::cast_slice(row), &mut packed);
                }
                let shape: Vec<u8> = [rows as i64, cols as i64]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                vec![packed, scales, shape]
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::e4m3_to_f32;

    fn sizes_match(scheme: Scheme, t: &[Vec<u8>], rows: usize, cols: usize, d: ScaleDtype) {
        let specs = scheme.linear_tensors(rows, cols, d);
        assert_eq!(specs.len(), t.len());
        for (s, b) in specs.iter().zip(t) {
            assert_eq!(
                s.shape.iter().product::<usize>() * s.dtype.size(),
                b.len(),
                "{}",
                s.suffix
            );
        }
    }

    #[test]
    fn every_scheme_fills_its_tensors() {
        let (rows, cols) = (130, 200);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let st = Some(StaticScales {
            weight_amax: 2.0,
            input_scale: 0.01,
        });
        for scheme in [
            Scheme::Fp8Dynamic,
            Scheme::Fp8Static,
            Scheme::Fp8Block,
            Scheme::W8A8,
            Scheme::W8A16,
        ] {
            for d in [ScaleDtype::BF16, ScaleDtype::F16, ScaleDtype::F32] {
                let t = quantize_linear(scheme, &w, rows, cols, d, st).unwrap();
                sizes_match(scheme, &t, rows, cols, d);
            }
        }
    }

    #[test]
    fn fp8_block_scales_cover_partial_blocks() {
        // Block (1, 1) of a 130 × 200 matrix is rows 128..130 × cols 128..200.
        let (rows, cols) = (130, 200);
        let mut w = vec![0.5f32; rows * cols];
        w[129 * cols + 199] = -44.8;
        let t = quantize_linear(Scheme::Fp8Block, &w, rows, cols, ScaleDtype::F32, None).unwrap();
        let s: Vec<f32> = t[1]
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(s, vec![0.5 / 448.0, 0.5 / 448.0, 0.5 / 448.0, 44.8 / 448.0]);
        assert_eq!(e4m3_to_f32(t[0][129 * cols + 199]), -448.0);
        assert_eq!(e4m3_to_f32(t[0][0]), 448.0);
    }

    #[test]
    fn static_weights_share_the_fused_maximum() {
        let w = vec![1.0f32; 8];
        let st = StaticScales {
            weight_amax: 7.0,
            input_scale: 0.5,
        };
        let t = quantize_linear(Scheme::Fp8Static, &w, 2, 4, ScaleDtype::F32, Some(st)).unwrap();
        assert_eq!(t[1], (1.0f32 / 64.0).to_le_bytes().to_vec());
        assert_eq!(t[2], 0.5f32.to_le_bytes().to_vec());
        assert_eq!(
            e4m3_to_f32(t[0][0]),
            64.0,
            "scaled by the fused maximum 7, not its own 1"
        );
    }

    #[test]
    fn bad_weights_and_overflowing_scales_are_errors() {
        let mut w = vec![1.0f32; 8];
        w[6] = f32::NAN;
        let e = quantize_linear(Scheme::W8A8, &w, 2, 4, ScaleDtype::BF16, None).unwrap_err();
        assert!(
            matches!(e, LinearQuantError::NonFiniteWeight { row: 1, col: 2, value } if value.is_nan()),
            "{e}"
        );
        let big = vec![1e9f32; 8];
        let e = quantize_linear(Scheme::Fp8Dynamic, &big, 2, 4, ScaleDtype::F16, None).unwrap_err();
        assert!(matches!(e, LinearQuantError::ScaleOverflow { .. }), "{e}");
        let e =
            quantize_linear(Scheme::Fp8Static, &w[..4], 1, 4, ScaleDtype::F16, None).unwrap_err();
        assert_eq!(e, LinearQuantError::MissingStaticScales);
    }
}
