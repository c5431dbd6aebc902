//! AWQ over the pipeline, block by block, in true-sequential order:
//! 1. input_layernorm → q, k, v: scales searched on the attention output (o(attention), o
//!    still in full precision), folded into the norm;
//! 2. v → o when v's outputs are o's inputs (no grouped-query attention): scales searched on
//!    o's output, folded into v's rows;
//! 3. q, k, v clipped (v only, as AutoAWQ skips q and k) and quantized; o's inputs are then
//!    taken through them, o clipped and quantized;
//! 4. post_attention_layernorm → gate, up: scales searched on the MLP output (down still in
//!    full precision) from inputs that pass through the quantized attention;
//! 5. up → down: scales searched on down's output, folded into up's rows;
//! 6. gate, up clipped and quantized; down's inputs taken through them, down clipped and
//!    quantized.
//!
//! The losses of single linears (v → o, up → down, every clip) are computed exactly from the
//! Gram matrix of the linear's inputs, over every calibration token. The module losses (steps 1
//! and 4) run the module on `search_samples` evenly spaced samples (all by default).

use kernels::Matrix;
use quant::awq::{apply_clip, scaled_fake_quant, search_clip, search_scales, AwqConfig, Gram};
use quant::groupq::{quantize_rtn, FitRule, GroupQuant};
use runtime::model::{Layer, LinearKind};

use crate::pipeline::{
    set_weight, weight_of, Acts, Block, BlockQuant, BlockQuantizer, PipelineError,
};

/// One scale search's outcome, for reports.
#[derive(Clone, Debug)]
pub struct SearchReport {
    pub layer: usize,
    /// The linears balanced ("q_proj,k_proj,v_proj").
    pub linears: String,
    /// Grid point chosen (0 = no scaling) and its loss relative to no scaling.
    pub best: usize,
    pub relative_loss: f64,
}

pub struct AwqQuantizer {
    pub cfg: AwqConfig,
    /// At most this many samples run the module losses of the scale searches (0: all).
    pub search_samples: usize,
    pub report: Vec<SearchReport>,
}

/// mean |x| per column over every sample.
fn mean_abs(acts: &[Vec<f32>], width: usize) -> Vec<f32> {
    let mut s = vec![0f64; width];
    let mut n = 0usize;
    for a in acts {
        for row in a.chunks_exact(width) {
            for (s, x) in s.iter_mut().zip(row) {
                *s += x.abs() as f64;
            }
            n += 1;
        }
    }
    s.iter().map(|v| (v / n.max(1) as f64) as f32).collect()
}

/// Σ XᵀX of every sample's activations, and the tokens summed.
fn gram(acts: &[Vec<f32>], width: usize) -> (Vec<f32>, usize) {
    let mut g = vec![0f32; width * width];
    let mut n = 0;
    for a in acts {
        let t = a.len() / width;
        kernels::gram::add_gram(a, t, width, &mut g);
        n += t;
    }
    kernels::gram::mirror_lower(&mut g, width);
    (g, n)
}

/// Mean squared difference of two sets of outputs: each sample's sum in eight f64 lanes (so it
/// vectorizes), the samples in parallel, their sums added in order.
fn mse(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    use rayon::prelude::*;
    let sums: Vec<f64> = a
        .par_iter()
        .zip(b)
        .map(|(x, y)| {
            let mut lanes = [0f64; 8];
            let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
            let tail: f64 = xc
                .remainder()
                .iter()
                .zip(yc.remainder())
                .map(|(p, q)| ((p - q) as f64).powi(2))
                .sum();
            for (p, q) in xc.zip(yc) {
                for ((l, p), q) in lanes.iter_mut().zip(p).zip(q) {
                    let d = (p - q) as f64;
                    *l += d * d;
                }
            }
            tail + lanes.iter().sum::<f64>()
        })
        .collect();
    let n: usize = a.iter().map(|x| x.len()).sum();
    sums.iter().sum::<f64>() / n.max(1) as f64
}

/// Σ_r Δ_r·G·Δ_rᵀ / (tokens · rows) for Δ = `w` − `w0` (rows × cols, G = `gm`): the mean squared
/// output error of the linear over the tokens G sums, computed with the matmul kernels.
fn gram_loss(gm: &kernels::DenseF32Matrix, tokens: usize, w: &[f32], w0: &[f32]) -> f64 {
    let delta: Vec<f32> = w.iter().zip(w0).map(|(a, b)| a - b).collect();
    let rows = delta.len() / gm.cols();
    let mut y = vec![0f32; delta.len()];
    gm.matmul(&delta, rows, &mut y);
    let s: f64 = y
        .iter()
        .zip(&delta)
        .map(|(a, b)| (*a as f64) * (*b as f64))
        .sum();
    s / (tokens.max(1) * rows) as f64
}

/// The Gram matrix `g` (cols × cols) for [`gram_loss`], packed once per search. In f32: the grid
/// points' losses differ by less than bf16 would resolve.
fn gram_metric(g: &[f32], cols: usize) -> kernels::DenseF32Matrix {
    kernels::DenseF32Matrix::new(g, cols, cols)
}

fn scale_columns(layer: &mut Layer, kind: LinearKind, s: &[f32]) {
    let mut w = weight_of(layer, kind);
    for row in w.chunks_exact_mut(s.len()) {
        for (x, s) in row.iter_mut().zip(s) {
            *x *= s;
        }
    }
    set_weight(layer, kind, &w);
}

fn divide_rows(layer: &mut Layer, kind: LinearKind, s: &[f32]) {
    let mut w = weight_of(layer, kind);
    let cols = w.len() / s.len();
    for (row, s) in w.chunks_exact_mut(cols).zip(s) {
        for x in row.iter_mut() {
            *x /= s;
        }
    }
    set_weight(layer, kind, &w);
    let lin = layer.linear_mut(kind);
    if let Some(b) = &lin.bias {
        lin.bias = Some(std::sync::Arc::new(
            b.iter().zip(s).map(|(b, s)| b / s).collect(),
        ));
    }
}

fn divide_columns(acts: &mut [Vec<f32>], s: &[f32]) {
    for a in acts {
        for row in a.chunks_exact_mut(s.len()) {
            for (x, s) in row.iter_mut().zip(s) {
                *x /= s;
            }
        }
    }
}

fn divided(v: &[f32], s: &[f32]) -> std::sync::Arc<Vec<f32>> {
    std::sync::Arc::new(v.iter().zip(s).map(|(a, b)| a / b).collect())
}

impl AwqQuantizer {
    pub fn new(cfg: AwqConfig, search_samples: usize) -> AwqQuantizer {
        AwqQuantizer {
            cfg,
            search_samples,
            report: Vec::new(),
        }
    }

    /// The samples the module losses run on.
    fn subset(&self, acts: &[Vec<f32>]) -> Acts {
        let n = acts.len();
        let k = if self.search_samples == 0 {
            n
        } else {
            self.search_samples.min(n)
        };
        (0..k).map(|i| acts[i * n / k].clone()).collect()
    }

    /// Grid search of the scales shared by `kinds` (reading inputs whose mean |x| is `x_mean`),
    /// each candidate's loss from `loss` on a copy of the layer with those linears replaced by
    /// Q(W·s)/s.
    fn search(
        &mut self,
        b: &Block,
        kinds: &[LinearKind],
        x_mean: &[f32],
        loss: impl Fn(&Layer) -> f64,
    ) -> Result<Vec<f32>, PipelineError> {
        let cols = x_mean.len();
        let weights: Vec<Vec<f32>> = kinds.iter().map(|k| weight_of(&b.layer, *k)).collect();
        let refs: Vec<&[f32]> = weights.iter().map(|w| w.as_slice()).collect();
        let w_mean = quant::awq::weight_mean(&refs, cols, self.cfg.group_size);
        let r = search_scales(x_mean, &w_mean, self.cfg.n_grid, |s| {
            let mut cand = b.layer.clone();
            for (k, w) in kinds.iter().zip(&weights) {
                set_weight(&mut cand, *k, &scaled_fake_quant(w, cols, s, &self.cfg));
            }
            loss(&cand)
        })
        .map_err(|e| PipelineError::Linear {
            layer: b.index,
            kind: kinds[0],
            msg: e.to_string(),
        })?;
        self.report.push(SearchReport {
            layer: b.index,
            linears: kinds
                .iter()
                .map(|k| k.hf_name().rsplit('.').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(","),
            best: r.best,
            relative_loss: r.losses[r.best] / r.losses[0].max(f64::MIN_POSITIVE),
        });
        Ok(r.scales)
    }

    /// Clips (unless `clip` is false), quantizes and puts back the linear `kind`, whose inputs
    /// have the Gram matrix `g` over `tokens`.
    fn finish_linear(
        &self,
        b: &mut Block,
        kind: LinearKind,
        g: Option<(&[f32], usize)>,
        out: &mut BlockQuant,
    ) -> Result<(), PipelineError> {
        let m = &b.layer.linear(kind).w;
        let (rows, cols) = (m.rows(), m.cols());
        let mut w = weight_of(&b.layer, kind);
        if let Some(i) = quant::first_nan_or_inf(&w) {
            return Err(PipelineError::Linear {
                layer: b.index,
                kind,
                msg: format!("weight {} at row {}, column {}", w[i], i / cols, i % cols),
            });
        }
        if let Some((g, tokens)) = g {
            let max = search_clip(&w, rows, &Gram { g, cols, tokens }, &self.cfg);
            apply_clip(&mut w, rows, cols, self.cfg.group_size, &max);
        }
        let q: GroupQuant = quantize_rtn(
            &w,
            rows,
            cols,
            self.cfg.bits,
            self.cfg.group_size,
            FitRule::Awq,
        );
        set_weight(&mut b.layer, kind, &q.dequantize());
        out.insert(kind, q);
        Ok(())
    }
}

/// o(attention(h)) for each sample through `layer`.
fn attn_out(b: &Block, layer: &Layer, h: &[Vec<f32>]) -> Acts {
    let d = b.hidden_size();
    b.attention(layer, h)
        .iter()
        .map(|a| layer.o.forward(a, a.len() / d))
        .collect()
}

/// down(silu(gate(h))·up(h)) for each sample through `layer`.
fn mlp_out(b: &Block, layer: &Layer, h: &[Vec<f32>]) -> Acts {
    let ff = layer.down.w.cols();
    b.mlp_acts(layer, h)
        .iter()
        .map(|a| layer.down.forward(a, a.len() / ff))
        .collect()
}

impl BlockQuantizer for AwqQuantizer {
    fn quantize_block(&mut self, b: &mut Block) -> Result<BlockQuant, PipelineError> {
        use LinearKind::*;
        let mut out = BlockQuant::new();
        let d = b.hidden_size();

        // 1. input_layernorm → q, k, v.
        let mut h = b.attn_inputs(&b.layer);
        let hs = self.subset(&h);
        let want = attn_out(b, &b.layer, &hs);
        let s = self.search(b, &[Q, K, V], &mean_abs(&h, d), |l| {
            mse(&attn_out(b, l, &hs), &want)
        })?;
        drop((hs, want));
        b.layer.attn_norm = divided(&b.layer.attn_norm, &s);
        for k in [Q, K, V] {
            scale_columns(&mut b.layer, k, &s);
        }
        divide_columns(&mut h, &s);

        // 2. v → o where v's outputs are o's inputs.
        let (v_rows, o_cols) = (b.layer.v.w.rows(), b.layer.o.w.cols());
        if v_rows == o_cols {
            let a = b.attention(&b.layer, &h);
            let (g, tokens) = gram(&a, o_cols);
            let (gm, w0) = (gram_metric(&g, o_cols), weight_of(&b.layer, O));
            let s = self.search(b, &[O], &mean_abs(&a, o_cols), |l| {
                gram_loss(&gm, tokens, &weight_of(l, O), &w0)
            })?;
            divide_rows(&mut b.layer, V, &s);
            scale_columns(&mut b.layer, O, &s);
        }

        // 3. q, k, v, then o on inputs through them.
        let (g, tokens) = gram(&h, d);
        for k in [Q, K] {
            self.finish_linear(b, k, None, &mut out)?;
        }
        self.finish_linear(b, V, Some((&g, tokens)), &mut out)?;
        drop(g);
        let a = b.attention(&b.layer, &h);
        drop(h);
        let (g, tokens) = gram(&a, o_cols);
        self.finish_linear(b, O, Some((&g, tokens)), &mut out)?;
        drop(g);
        b.attn_residual(&a);
        drop(a);

        // 4. post_attention_layernorm → gate, up.
        let mut h = b.mlp_inputs(&b.layer);
        let hs = self.subset(&h);
        let want = mlp_out(b, &b.layer, &hs);
        let s = self.search(b, &[Gate, Up], &mean_abs(&h, d), |l| {
            mse(&mlp_out(b, l, &hs), &want)
        })?;
        drop((hs, want));
        b.layer.ffn_norm = divided(&b.layer.ffn_norm, &s);
        for k in [Gate, Up] {
            scale_columns(&mut b.layer, k, &s);
        }
        divide_columns(&mut h, &s);

        // 5. up → down.
        let ff = b.layer.down.w.cols();
        let act = b.mlp_acts(&b.layer, &h);
        let (g, tokens) = gram(&act, ff);
        let (gm, w0) = (gram_metric(&g, ff), weight_of(&b.layer, Down));
        let s = self.search(b, &[Down], &mean_abs(&act, ff), |l| {
            gram_loss(&gm, tokens, &weight_of(l, Down), &w0)
        })?;
        drop((act, g, gm, w0));
        divide_rows(&mut b.layer, Up, &s);
        scale_columns(&mut b.layer, Down, &s);

        // 6. gate, up, then down on inputs through them.
        let (g, tokens) = gram(&h, d);
        for k in [Gate, Up] {
            self.finish_linear(b, k, Some((&g, tokens)), &mut out)?;
        }
        drop(g);
        let act = b.mlp_acts(&b.layer, &h);
        drop(h);
        let (g, tokens) = gram(&act, ff);
        self.finish_linear(b, Down, Some((&g, tokens)), &mut out)?;
        drop(g);
        b.mlp_residual(&act);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::run;
    use runtime::model::synthetic::SyntheticSpec;

    fn samples() -> Vec<Vec<u32>> {
        (0..5)
            .map(|s| (0..20).map(|t| ((s * 37 + t * 11) % 96) as u32).collect())
            .collect()
    }

    #[test]
    fn mse_is_the_mean_over_every_value() {
        let a = vec![vec![1.0f32; 19], vec![0.5f32; 8], vec![]];
        let b = vec![
            (0..19).map(|i| i as f32 * 0.25).collect::<Vec<_>>(),
            vec![2.0f32; 8],
            vec![],
        ];
        let mut want = 0f64;
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in x.iter().zip(y) {
                want += ((p - q) as f64).powi(2);
            }
        }
        want /= 27.0;
        assert!(
            (mse(&a, &b) - want).abs() <= 1e-12 * want,
            "{} vs {want}",
            mse(&a, &b)
        );
    }

    #[test]
    fn gram_loss_is_the_mean_squared_output_error() {
        let (cols, rows) = (5, 3);
        let x: Vec<f32> = (0..4 * cols)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.3).sin()).collect();
        let w0: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.31).sin()).collect();
        let (g, n) = gram(std::slice::from_ref(&x), cols);
        // The Gram matrix sums the bf16-rounded activations.
        let x: Vec<f32> = x
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect();
        let mut direct = 0f64;
        for t in 0..4 {
            for r in 0..rows {
                let e: f64 = (0..cols)
                    .map(|c| ((w[r * cols + c] - w0[r * cols + c]) * x[t * cols + c]) as f64)
                    .sum();
                direct += e * e;
            }
        }
        direct /= (4 * rows) as f64;
        let got = gram_loss(&gram_metric(&g, cols), n, &w, &w0);
        assert!((got - direct).abs() < 1e-5 * direct, "{got} vs {direct}");
    }

    #[test]
    fn quantizes_every_linear_with_and_without_v_to_o() {
        for spec in [
            SyntheticSpec::default(),
            SyntheticSpec {
                kv_heads: 4,
                qkv_bias: true,
                ..SyntheticSpec::default()
            },
        ] {
            let model = spec.build(4);
            let cfg = AwqConfig {
                group_size: 32,
                ..AwqConfig::default()
            };
            let mut q = AwqQuantizer::new(cfg, 3);
            let mut blocks = 0;
            run(&model, &samples(), &mut q, |_, layer, bq| {
                assert_eq!(bq.len(), 7);
                // The norms carry the scales.
                assert!(layer.attn_norm.iter().all(|v| v.is_finite()));
                blocks += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(blocks, spec.layers);
            let searches = if spec.kv_heads == spec.heads { 4 } else { 3 };
            assert_eq!(q.report.len(), searches * spec.layers);
            // Each search keeps the best grid point, never worse than no scaling.
            assert!(q.report.iter().all(|r| r.relative_loss <= 1.0));
        }
    }
}
