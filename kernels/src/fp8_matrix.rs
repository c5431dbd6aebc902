//! FP8 E4M3 weights with per-tensor, per-channel or block scales (compressed-tensors'
//! float-quantized layouts), multiplied as vLLM's FP8 W8A8 path does: activations quantized to
//! E4M3 per token (dynamic), per token group (with block weights) or with a calibrated
//! per-tensor scale (static), exactly as vLLM's `scaled_fp8_quant` / `per_token_group_quant_fp8`
//! (quant::fp8 holds the reference); products of E4M3 values (exact in f32) accumulated in f32
//! over each stretch of columns that shares one weight scale and one activation scale, then
//! scaled. Weights are decoded through a 256-entry table.
//!
//! A static scale can be too small for the activations met at run time: values beyond ±448·s
//! saturate there (vLLM clamps the same way) and are counted, so that
//! [`Matrix::clipped_activations`] can report the layers whose calibration fell short.

use std::sync::atomic::{AtomicU64, Ordering};

use quant::bytes::SharedBytes;
use quant::fp8::{self, e4m3_is_nan, E4M3_TO_F32};

use crate::cpu::dot_f32;
use crate::cpu::features::exact_activations;
use crate::matrix::{check_matmul_args, ClipCount, Matrix, OutPtr};
use crate::scaled::{
    check_scales, for_each_block, for_each_token, with_row_buffer, ScaledMatrixError,
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
    /// Columns per stretch of one weight scale (the block width, or the whole row).
    weight_cols: usize,
    clipped: AtomicU64,
    seen: AtomicU64,
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
        let weight_cols = match &scale {
            Fp8WeightScale::Tensor(s) => {
                check_scales("weight scale", &[*s])?;
                cols
            }
            Fp8WeightScale::Channel(s) => {
                if s.len() != rows {
                    return Err(size("weight scales", rows, s.len()));
                }
                check_scales("weight scale", s)?;
                cols
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
                check_scales("block weight scale", scales)?;
                *bc
            }
        };
        let act_cols = match act {
            Fp8Activations::DynamicGroup(0) => {
                return Err(ScaledMatrixError::Unsupported(
                    "activation groups of 0 columns".into(),
                ))
            }
            Fp8Activations::DynamicGroup(g) => g,
            Fp8Activations::Static(s) => {
                check_scales("input scale", &[s])?;
                cols
            }
            _ => cols,
        };
        let (a, b) = (weight_cols.min(act_cols), weight_cols.max(act_cols));
        if b < cols && !b.is_multiple_of(a) {
            return Err(ScaledMatrixError::Unsupported(format!(
                "weight blocks of {weight_cols} columns with activation groups of {act_cols}"
            )));
        }
        Ok(Fp8Matrix {
            codes,
            rows,
            cols,
            scale,
            act,
            weight_cols,
            clipped: AtomicU64::new(0),
            seen: AtomicU64::new(0),
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

    /// The weight scale of row `r` over the segment starting at column `c`.
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

    /// The activations as the product sees them: decoded E4M3 values (or the f32 inputs), a
    /// scale per token and activation group, and the group's width in columns.
    fn quantized_activations(&self, x: &[f32], n_tok: usize) -> (Vec<f32>, Vec<f32>, usize) {
        let cols = self.cols;
        let act = if exact_activations() {
            Fp8Activations::Unquantized
        } else {
            self.act
        };
        let decode = |q: &[u8], out: &mut [f32]| {
            for (o, &b) in out.iter_mut().zip(q) {
                *o = E4M3_TO_F32[b as usize];
            }
        };
        match act {
            Fp8Activations::Unquantized => (x.to_vec(), vec![1.0; n_tok], cols),
            Fp8Activations::DynamicPerToken | Fp8Activations::Static(_) => {
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
                    *s = match act {
                        Fp8Activations::Static(scale) => {
                            let n = fp8::quantize_static(x, scale, &mut q);
                            beyond.fetch_add(n as u64, Ordering::Relaxed);
                            scale
                        }
                        _ => fp8::quantize_token_dynamic(x, &mut q),
                    };
                    decode(&q, out);
                });
                if let Fp8Activations::Static(_) = act {
                    self.clipped
                        .fetch_add(beyond.into_inner(), Ordering::Relaxed);
                    self.seen
                        .fetch_add((n_tok * cols) as u64, Ordering::Relaxed);
                }
                (xq, s, cols)
            }
            Fp8Activations::DynamicGroup(g) => {
                let groups = cols.div_ceil(g);
                let mut xq = vec![0f32; n_tok * cols];
                let mut s = vec![0f32; n_tok * groups];
                let jobs: Vec<_> = xq
                    .chunks_mut(cols)
                    .zip(s.chunks_mut(groups))
                    .zip(x.chunks(cols))
                    .collect();
                for_each_token(jobs, |((out, s), x)| {
                    let mut q = vec![0u8; x.len()];
                    fp8::quantize_token_groups(x, g, &mut q, s);
                    decode(&q, out);
                });
                (xq, s, g)
            }
        }
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
        let (xq, xs, group) = self.quantized_activations(x, n_tok);
        let groups = cols.div_ceil(group);
        // Construction checked that the narrower of the two stretches divides the wider.
        let seg = self.weight_cols.min(group).max(1);
        let out = OutPtr(y.as_mut_ptr());
        let (xq, xs) = (&xq, &xs);
        for_each_block(self.rows, n_tok, cols, |rows, toks| {
            with_row_buffer(cols, |w| {
                for r in rows {
                    for (w, &b) in w.iter_mut().zip(self.codes_of_row(r)) {
                        *w = E4M3_TO_F32[b as usize];
                    }
                    for t in toks.clone() {
                        let xt = &xq[t * cols..(t + 1) * cols];
                        let mut v = 0f32;
                        for c in (0..cols).step_by(seg) {
                            let e = (c + seg).min(cols);
                            let acc = dot_f32(&w[c..e], &xt[c..e]);
                            v += acc * self.w_scale(r, c) * xs[t * groups + c / group];
                        }
                        // SAFETY: t·rows + r < n_tok·rows = y.len(); blocks are disjoint.
                        unsafe { out.write(t * self.rows + r, v) };
                    }
                }
            })
        });
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (c, (o, &b)) in out.iter_mut().zip(self.codes_of_row(r)).enumerate() {
            *o = E4M3_TO_F32[b as usize] * self.w_scale(r, c);
        }
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
