//! FP8 E4M3 weights with per-tensor, per-channel or block scales (compressed-tensors'
//! float-quantized layouts), multiplied as vLLM's FP8 W8A8 path does: activations quantized to
//! E4M3 per token (dynamic), per token group (with block weights) or with a calibrated
//! per-tensor scale (static), exactly as vLLM's `scaled_fp8_quant` / `per_token_group_quant_fp8`
//! (quant::fp8 holds the reference). Weights are decoded through a 256-entry table.
//!
//! With per-tensor or per-channel weights and per-token or static activations, the products of
//! E4M3 values are exact in f32, summed in f32 and scaled once, as vLLM's scaled GEMM does.
//! Block weight scales and group activation scales are folded into the decoded values (one f32
//! rounding per term, 2⁻²⁴ relative), so that every row is a single dot product.
//!
//! A static scale can be too small for the activations met at run time: values beyond ±448·s
//! saturate there (vLLM clamps the same way) and are counted, so that
//! [`Matrix::clipped_activations`] can report the layers whose calibration fell short.

use std::sync::atomic::{AtomicU64, Ordering};

use quant::bytes::SharedBytes;
use quant::fp8::{self, e4m3_is_nan, E4M3_TO_F32};
use quant::ggml::GgmlType;

use crate::cpu::features::exact_activations;
use crate::cpu::vec_dot::DotKernel;
use crate::cpu::Isa;
use crate::matrix::{check_matmul_args, ClipCount, Matrix, OutPtr};
use crate::scaled::{
    check_scales, float_dots, for_each_block, for_each_token, with_row_buffer, ScaledMatrixError,
};

/// How the weights are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum Fp8WeightScale {
    Tensor(f32),
    /// One scale per output row.
    Channel(Vec<f32>),
    /// One scale per [rows × cols] block, row-major over ⌈R/rows⌉ × ⌈C/cols⌉ blocks.
    Block {
        rows: usize,
        cols: usize,
        scales: Vec<f32>,
    },
}

/// What happens to the activations of a product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fp8Activations {
    /// E4M3 per token, scale max(amax/448, 1/(448·512)).
    DynamicPerToken,
    /// E4M3 per token in groups of this many columns, scale max(amax, 1e-10)/448.
    DynamicGroup(usize),
    /// E4M3 with one calibrated scale.
    Static(f32),
    /// Used as they are (weight-only FP8).
    Unquantized,
}

pub struct Fp8Matrix {
    codes: SharedBytes,
    rows: usize,
    cols: usize,
    scale: Fp8WeightScale,
    act: Fp8Activations,
    clipped: AtomicU64,
    seen: AtomicU64,
    /// The f32 kernel for decoded rows against decoded activations.
    float: DotKernel,
}

impl Fp8Matrix {
    /// `codes`: rows × cols E4M3 bytes, row-major. Refuses NaN codes (a NaN weight would turn
    /// every output it touches into NaN) and scales that are not finite and positive.
    pub fn new(
        codes: SharedBytes,
        rows: usize,
        cols: usize,
        scale: Fp8WeightScale,
        act: Fp8Activations,
    ) -> Result<Fp8Matrix, ScaledMatrixError> {
        let size = |what, want, got| ScaledMatrixError::Size {
            what,
            rows,
            cols,
            want,
            got,
        };
        if codes.len() != rows * cols {
            return Err(size("fp8 weights", rows * cols, codes.len()));
        }
        if let Some(index) = codes.iter().position(|b| e4m3_is_nan(*b)) {
            return Err(ScaledMatrixError::NanWeight {
                index,
                row: index / cols.max(1),
                code: codes[index],
            });
        }
        match &scale {
            Fp8WeightScale::Tensor(s) => check_scales("weight scale", &[*s])?,
            Fp8WeightScale::Channel(s) => {
                if s.len() != rows {
                    return Err(size("weight scales", rows, s.len()));
                }
                check_scales("weight scale", s)?
            }
            Fp8WeightScale::Block {
                rows: br,
                cols: bc,
                scales,
            } => {
                if *br == 0 || *bc == 0 {
                    return Err(ScaledMatrixError::Unsupported("empty weight blocks".into()));
                }
                let want = rows.div_ceil(*br) * cols.div_ceil(*bc);
                if scales.len() != want {
                    return Err(size("block weight scales", want, scales.len()));
                }
                check_scales("block weight scale", scales)?
            }
        }
        match act {
            Fp8Activations::DynamicGroup(0) => {
                return Err(ScaledMatrixError::Unsupported(
                    "activation groups of 0 columns".into(),
                ))
            }
            Fp8Activations::Static(s) => check_scales("input scale", &[s])?,
            _ => {}
        }
        Ok(Fp8Matrix {
            codes,
            rows,
            cols,
            scale,
            act,
            clipped: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            float: DotKernel::new(GgmlType::F32, Isa::best())
                .expect("F32 has kernels at every level"),
        })
    }

    /// The same matrix multiplied with the f32 kernels of `isa`, or None when this CPU lacks it.
    pub fn with_isa(self, isa: Isa) -> Option<Fp8Matrix> {
        Some(Fp8Matrix {
            float: DotKernel::new(GgmlType::F32, isa)?,
            ..self
        })
    }

    pub fn weight_scale(&self) -> &Fp8WeightScale {
        &self.scale
    }

    pub fn activations(&self) -> Fp8Activations {
        self.act
    }

    pub fn codes_of_row(&self, r: usize) -> &[u8] {
        &self.codes[r * self.cols..(r + 1) * self.cols]
    }

    /// The weight scale of row `r` at column `c`.
    fn w_scale(&self, r: usize, c: usize) -> f32 {
        match &self.scale {
            Fp8WeightScale::Tensor(s) => *s,
            Fp8WeightScale::Channel(s) => s[r],
            Fp8WeightScale::Block {
                rows: br,
                cols: bc,
                scales,
            } => scales[(r / br) * self.cols.div_ceil(*bc) + c / bc],
        }
    }

    /// Row `r` as the product uses it (block scales folded in) and the scale left to apply to
    /// its sums (the tensor or channel scale, or 1).
    fn decode_row(&self, r: usize, out: &mut [f32]) -> f32 {
        let codes = self.codes_of_row(r);
        for (o, &b) in out.iter_mut().zip(codes) {
            *o = E4M3_TO_F32[b as usize];
        }
        if let Fp8WeightScale::Block {
            rows: br,
            cols: bc,
            ref scales,
        } = self.scale
        {
            let row_scales = &scales[(r / br) * self.cols.div_ceil(bc)..];
            for (chunk, s) in out.chunks_mut(bc).zip(row_scales) {
                chunk.iter_mut().for_each(|v| *v *= s);
            }
            return 1.0;
        }
        self.w_scale(r, 0)
    }

    /// The activations as the product sees them: decoded E4M3 values (group scales folded in)
    /// or the f32 inputs, and the scale left to apply to each token's sums.
    fn quantized_activations(&self, x: &[f32], n_tok: usize) -> (Vec<f32>, Vec<f32>) {
        let cols = self.cols;
        let act = if exact_activations() {
            Fp8Activations::Unquantized
        } else {
            self.act
        };
        if act == Fp8Activations::Unquantized {
            return (x.to_vec(), vec![1.0; n_tok]);
        }
        let mut xq = vec![0f32; n_tok * cols];
        let mut s = vec![0f32; n_tok];
        let beyond = AtomicU64::new(0);
        let jobs: Vec<_> = xq
            .chunks_mut(cols)
            .zip(&mut s)
            .zip(x.chunks(cols))
            .collect();
        for_each_token(jobs, |((out, s), x)| {
            let mut q = vec![0u8; x.len()];
            let decode = |q: &[u8], out: &mut [f32]| {
                for (o, &b) in out.iter_mut().zip(q) {
                    *o = E4M3_TO_F32[b as usize];
                }
            };
            *s = match act {
                Fp8Activations::Static(scale) => {
                    let n = fp8::quantize_static(x, scale, &mut q);
                    beyond.fetch_add(n as u64, Ordering::Relaxed);
                    decode(&q, out);
                    scale
                }
                Fp8Activations::DynamicGroup(g) => {
                    let mut gs = vec![0f32; x.len().div_ceil(g)];
                    fp8::quantize_token_groups(x, g, &mut q, &mut gs);
                    decode(&q, out);
                    for (o, gs) in out.chunks_mut(g).zip(&gs) {
                        o.iter_mut().for_each(|v| *v *= gs);
                    }
                    1.0
                }
                _ => {
                    let scale = fp8::quantize_token_dynamic(x, &mut q);
                    decode(&q, out);
                    scale
                }
            };
        });
        if let Fp8Activations::Static(_) = act {
            self.clipped
                .fetch_add(beyond.into_inner(), Ordering::Relaxed);
            self.seen
                .fetch_add((n_tok * cols) as u64, Ordering::Relaxed);
        }
        (xq, s)
    }
}

impl Matrix for Fp8Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        check_matmul_args(self, x, n_tok, y);
        let cols = self.cols;
        let (xq, xs) = self.quantized_activations(x, n_tok);
        let out = OutPtr(y.as_mut_ptr());
        let (xq, xs) = (&xq, &xs);
        for_each_block(self.rows, n_tok, cols, |rows, toks| {
            with_row_buffer(cols, |w| {
                for r in rows {
                    let ws = self.decode_row(r, w);
                    float_dots(&self.float, w, xq, cols, 0..cols, toks.clone(), |t, v| {
                        // SAFETY: t·rows + r < n_tok·rows = y.len(); blocks are disjoint.
                        unsafe { out.write(t * self.rows + r, v * ws * xs[t]) };
                    });
                }
            })
        });
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let s = self.decode_row(r, out);
        out.iter_mut().for_each(|v| *v *= s);
    }

    fn format(&self) -> String {
        let w = match &self.scale {
            Fp8WeightScale::Tensor(_) => "per-tensor".to_string(),
            Fp8WeightScale::Channel(_) => "per-channel".to_string(),
            Fp8WeightScale::Block { rows, cols, .. } => format!("{rows}x{cols} blocks"),
        };
        let a = match self.act {
            Fp8Activations::DynamicPerToken => "per-token dynamic".to_string(),
            Fp8Activations::DynamicGroup(g) => format!("per-token group {g} dynamic"),
            Fp8Activations::Static(_) => "per-tensor static".to_string(),
            Fp8Activations::Unquantized => "unquantized".to_string(),
        };
        format!("fp8 e4m3 ({w} weights, {a} activations)")
    }

    fn storage_bytes(&self) -> usize {
        let scales = match &self.scale {
            Fp8WeightScale::Tensor(_) => 1,
            Fp8WeightScale::Channel(s) => s.len(),
            Fp8WeightScale::Block { scales, .. } => scales.len(),
        };
        self.codes.len() + 4 * scales
    }

    fn clipped_activations(&self) -> Option<ClipCount> {
        matches!(self.act, Fp8Activations::Static(_)).then(|| ClipCount {
            clipped: self.clipped.load(Ordering::Relaxed),
            seen: self.seen.load(Ordering::Relaxed),
        })
    }
}
