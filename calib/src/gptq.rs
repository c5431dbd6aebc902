//! GPTQ over the pipeline: for each input site of a block, the Hessian of the site's inputs
//! (which already pass through the quantized linears before it), one factorization shared by
//! the linears reading that input, and quant's solver for each of them.

use std::time::Instant;

use quant::gptq::{quantize, Factor, GptqConfig, Hessian};
use runtime::model::LinearKind;

use crate::pipeline::{
    accumulate_gram, set_weight, weight_of, Block, BlockQuant, BlockQuantizer, PipelineError,
};

/// What the solver reported for one linear.
#[derive(Clone, Debug)]
pub struct LinearReport {
    pub layer: usize,
    pub kind: LinearKind,
    /// gptq.py's loss: Σ (w − q)² / U_ii², halved.
    pub loss: f64,
    /// The dampening the input's Hessian needed (fraction of its mean diagonal).
    pub damp: f64,
    pub seconds: f64,
}

pub struct GptqQuantizer {
    pub cfg: GptqConfig,
    pub report: Vec<LinearReport>,
}

impl GptqQuantizer {
    pub fn new(cfg: GptqConfig) -> GptqQuantizer {
        GptqQuantizer {
            cfg,
            report: Vec::new(),
        }
    }

    /// Quantizes the linears `kinds` that read `acts`, replacing them in the block's layer.
    fn site(
        &mut self,
        b: &mut Block,
        acts: &[Vec<f32>],
        kinds: &[LinearKind],
        out: &mut BlockQuant,
    ) -> Result<(), PipelineError> {
        let t0 = Instant::now();
        let layer = b.index;
        let cols = b.layer.linear(kinds[0]).w.cols();
        let err = |kind: LinearKind, msg: String| PipelineError::Linear { layer, kind, msg };
        let mut cfg = self.cfg.clone();
        // One group per row: the group is the whole input.
        if cfg.group_size == 0 {
            cfg.group_size = cols;
        }
        let mut hess = Hessian::new(cols);
        accumulate_gram(acts, cols, &mut hess);
        let factor = Factor::new(&hess, &cfg).map_err(|e| {
            let names: Vec<&str> = kinds.iter().map(|k| k.hf_name()).collect();
            err(kinds[0], format!("{e} (the input of {})", names.join(", ")))
        })?;
        for &kind in kinds {
            let w = weight_of(&b.layer, kind);
            if let Some(i) = quant::first_nan_or_inf(&w) {
                return Err(err(
                    kind,
                    format!("weight {} at row {}, column {}", w[i], i / cols, i % cols),
                ));
            }
            let rows = w.len() / cols;
            let r = quantize::<f32>(&w, rows, cols, &factor, &cfg)
                .map_err(|e| err(kind, e.to_string()))?;
            set_weight(&mut b.layer, kind, &r.quant.dequantize());
            self.report.push(LinearReport {
                layer,
                kind,
                loss: r.loss,
                damp: factor.damp,
                seconds: t0.elapsed().as_secs_f64(),
            });
            out.insert(kind, r.quant);
        }
        Ok(())
    }
}

impl BlockQuantizer for GptqQuantizer {
    fn quantize_block(&mut self, b: &mut Block) -> Result<BlockQuant, PipelineError> {
        use LinearKind::*;
        let mut out = BlockQuant::new();
        let h = b.attn_inputs(&b.layer);
        self.site(b, &h, &[Q, K, V], &mut out)?;
        let a = b.attention(&b.layer, &h);
        drop(h);
        self.site(b, &a, &[O], &mut out)?;
        b.attn_residual(&a);
        drop(a);
        let h = b.mlp_inputs(&b.layer);
        self.site(b, &h, &[Gate, Up], &mut out)?;
        let act = b.mlp_acts(&b.layer, &h);
        drop(h);
        self.site(b, &act, &[Down], &mut out)?;
        b.mlp_residual(&act);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::run;
    use runtime::model::synthetic::SyntheticSpec;

    #[test]
    fn quantizes_every_linear_of_every_block() {
        let spec = SyntheticSpec::default();
        let model = spec.build(21);
        let samples: Vec<Vec<u32>> = (0..6)
            .map(|s| (0..24).map(|t| ((s * 31 + t * 7) % 96) as u32).collect())
            .collect();
        let cfg = GptqConfig {
            group_size: 32,
            ..GptqConfig::default()
        };
        let mut q = GptqQuantizer::new(cfg.clone());
        let mut blocks = Vec::new();
        run(&model, &samples, &mut q, |i, _, bq| {
            blocks.push((i, bq));
            Ok(())
        })
        .unwrap();
        assert_eq!(blocks.len(), spec.layers);
        for (_, bq) in &blocks {
            assert_eq!(bq.len(), 7);
            for gq in bq.values() {
                gq.validate().unwrap();
                assert_eq!(gq.bits, 4);
            }
        }
        assert_eq!(q.report.len(), 7 * spec.layers);
        assert!(q
            .report
            .iter()
            .all(|r| r.loss.is_finite() && r.damp == cfg.damp));
    }
}
