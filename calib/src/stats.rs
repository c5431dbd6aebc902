//! Per-input-column statistics of every block linear's input, gathered by running the
//! full-precision model over calibration samples: Σx² (importance matrices), Σ|x| (AWQ-style
//! activation means), and the per-column range (SmoothQuant, static activation scales).

use std::collections::BTreeMap;

use runtime::model::staged::SITES;
use runtime::model::{LinearKind, Observer};
use runtime::Model;

use crate::pipeline::{Block, BlockQuant, BlockQuantizer, PipelineError};

/// Where a linear's input comes from; linears reading the same activations share one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputSite {
    /// The attention norm's output, read by q, k and v.
    AttnIn,
    /// The attention output, read by o.
    AttnOut,
    /// The MLP norm's output, read by gate and up.
    MlpIn,
    /// The SwiGLU product, read by down.
    MlpAct,
}

impl InputSite {
    pub fn of(kind: LinearKind) -> InputSite {
        match kind {
            LinearKind::Q | LinearKind::K | LinearKind::V => InputSite::AttnIn,
            LinearKind::O => InputSite::AttnOut,
            LinearKind::Gate | LinearKind::Up => InputSite::MlpIn,
            LinearKind::Down => InputSite::MlpAct,
        }
    }
}

/// Statistics of one input, per column (input feature).
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnStats {
    pub sum_sq: Vec<f64>,
    pub sum_abs: Vec<f64>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// Token rows seen.
    pub tokens: u64,
    /// NaN or infinite values seen (left out of min and max).
    pub non_finite: u64,
}

impl ColumnStats {
    pub fn new(cols: usize) -> ColumnStats {
        ColumnStats {
            sum_sq: vec![0.0; cols],
            sum_abs: vec![0.0; cols],
            min: vec![f32::INFINITY; cols],
            max: vec![f32::NEG_INFINITY; cols],
            tokens: 0,
            non_finite: 0,
        }
    }

    pub fn cols(&self) -> usize {
        self.sum_sq.len()
    }

    /// Adds `n_tok` rows of `x` (n_tok × cols). Sums in f32 within the call (one sample, as
    /// llama-imatrix sums), in f64 across calls; lanes of whole rows, so the loop vectorizes.
    pub fn add(&mut self, x: &[f32], n_tok: usize) {
        let p = Partial::of(x, n_tok, self.cols());
        self.merge(p);
    }

    /// Adds a sample's [`Partial`]: merging the samples' partials in order equals adding the
    /// samples in order.
    fn merge(&mut self, p: Partial) {
        for ((s, a), (q, b)) in self
            .sum_sq
            .iter_mut()
            .zip(&mut self.sum_abs)
            .zip(p.sq.iter().zip(&p.ab))
        {
            *s += *q as f64;
            *a += *b as f64;
        }
        for ((lo, hi), (l, h)) in self
            .min
            .iter_mut()
            .zip(&mut self.max)
            .zip(p.min.iter().zip(&p.max))
        {
            *lo = lo.min(*l);
            *hi = hi.max(*h);
        }
        self.non_finite += p.non_finite;
        self.tokens += p.tokens;
    }

    /// max |x| of each column.
    pub fn max_abs(&self) -> Vec<f32> {
        self.min
            .iter()
            .zip(&self.max)
            .map(|(a, b)| a.abs().max(b.abs()))
            .collect()
    }

    /// mean |x| of each column.
    pub fn mean_abs(&self) -> Vec<f64> {
        let n = self.tokens.max(1) as f64;
        self.sum_abs.iter().map(|s| s / n).collect()
    }

    /// The largest |x| over all columns, or None when some value was not finite.
    pub fn amax(&self) -> Option<f32> {
        (self.non_finite == 0).then(|| self.max_abs().into_iter().fold(0f32, f32::max))
    }
}

/// One sample's column sums (f32) and ranges, computed apart so samples can run in parallel.
struct Partial {
    sq: Vec<f32>,
    ab: Vec<f32>,
    min: Vec<f32>,
    max: Vec<f32>,
    tokens: u64,
    non_finite: u64,
}

impl Partial {
    fn of(x: &[f32], n_tok: usize, cols: usize) -> Partial {
        assert_eq!(
            x.len(),
            n_tok * cols,
            "activation rows are not n_tok × cols"
        );
        let mut p = Partial {
            sq: vec![0.0; cols],
            ab: vec![0.0; cols],
            min: vec![f32::INFINITY; cols],
            max: vec![f32::NEG_INFINITY; cols],
            tokens: n_tok as u64,
            non_finite: 0,
        };
        // Indexing slices of one length (not a zip of five) lets the loop vectorize; the
        // comparisons skip NaN as f32::min and max do.
        let (sq, ab) = (&mut p.sq[..cols], &mut p.ab[..cols]);
        let (lo, hi) = (&mut p.min[..cols], &mut p.max[..cols]);
        for row in x.chunks_exact(cols) {
            let row = &row[..cols];
            for j in 0..cols {
                let v = row[j];
                sq[j] += v * v;
                ab[j] += v.abs();
                lo[j] = if v < lo[j] { v } else { lo[j] };
                hi[j] = if v > hi[j] { v } else { hi[j] };
            }
        }
        p.non_finite = x.iter().map(|v| !v.is_finite() as u64).sum();
        p
    }
}

/// The statistics of every block's linear inputs.
#[derive(Clone, Debug, Default)]
pub struct ActivationStats {
    sites: BTreeMap<(usize, InputSite), ColumnStats>,
}

impl ActivationStats {
    /// The statistics of the input of linear `kind` in block `layer`.
    pub fn get(&self, layer: usize, kind: LinearKind) -> Option<&ColumnStats> {
        self.sites.get(&(layer, InputSite::of(kind)))
    }

    pub fn sites(&self) -> impl Iterator<Item = (&(usize, InputSite), &ColumnStats)> {
        self.sites.iter()
    }
}

impl Observer for ActivationStats {
    fn linear_input(&mut self, layer: usize, kind: LinearKind, x: &[f32], n_tok: usize) {
        let site = InputSite::of(kind);
        // Linears sharing an input are reported once each; count the activations once.
        let first_reader = matches!(
            kind,
            LinearKind::Q | LinearKind::O | LinearKind::Gate | LinearKind::Down
        );
        if first_reader {
            self.sites
                .entry((layer, site))
                .or_insert_with(|| ColumnStats::new(x.len() / n_tok.max(1)))
                .add(x, n_tok);
        }
    }
}

/// Runs `model` over each sample (a fresh cache per sample, no logits) and returns the statistics
/// of every linear's input; `progress` is called after each sample.
pub fn collect(
    model: &Model,
    samples: &[Vec<u32>],
    mut progress: impl FnMut(usize),
) -> ActivationStats {
    let mut stats = ActivationStats::default();
    for (i, s) in samples.iter().enumerate() {
        let mut cache = model.new_cache();
        model.forward_observed(s, &mut cache, s.len(), Some(&mut stats));
        progress(i + 1);
    }
    stats
}

/// The same statistics as [`collect`] at `sites`, gathered block by block over all samples
/// through the calibration pipeline (one block's weights in memory at a time, large batched
/// products in bf16 with f32 sums): what the converters use. Equal to [`collect`] up to bf16
/// rounding on full-precision models; `progress` is called after each block.
pub fn collect_blockwise(
    model: &Model,
    samples: &[Vec<u32>],
    sites: &[InputSite],
    progress: impl FnMut(usize),
) -> Result<ActivationStats, PipelineError> {
    let mut c = Collector {
        stats: ActivationStats::default(),
        sites: sites.to_vec(),
        progress,
    };
    crate::pipeline::run(model, samples, &mut c, |_, _, _| Ok(()))?;
    Ok(c.stats)
}

struct Collector<F> {
    stats: ActivationStats,
    sites: Vec<InputSite>,
    progress: F,
}

impl<F: FnMut(usize)> BlockQuantizer for Collector<F> {
    fn quantize_block(&mut self, b: &mut Block) -> Result<BlockQuant, PipelineError> {
        let layer = b.layer.clone();
        let wanted: Vec<LinearKind> = SITES
            .into_iter()
            .filter(|k| self.sites.contains(&InputSite::of(*k)))
            .collect();
        let Some(&last) = wanted.last() else {
            return Ok(BlockQuant::new());
        };
        let parts = b.observe_samples(&layer, last, |kind, x, n| {
            wanted
                .contains(&kind)
                .then(|| Partial::of(x, n, layer.linear(kind).w.cols()))
        });
        // Merged in sample order: the same sums whatever thread computed each sample.
        for sample in parts {
            for (kind, p) in SITES.into_iter().zip(sample) {
                let Some(p) = p else { continue };
                let cols = p.sq.len();
                self.stats
                    .sites
                    .entry((b.index, InputSite::of(kind)))
                    .or_insert_with(|| ColumnStats::new(cols))
                    .merge(p);
            }
        }
        (self.progress)(b.index + 1);
        Ok(BlockQuant::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::model::synthetic::SyntheticSpec;

    #[test]
    fn column_stats_match_a_direct_computation() {
        let x = [1.0f32, -2.0, 3.0, -4.0, 0.5, 6.0];
        let mut s = ColumnStats::new(3);
        s.add(&x[..3], 1);
        s.add(&x[3..], 1);
        assert_eq!(s.sum_sq, vec![17.0, 4.25, 45.0]);
        assert_eq!(s.sum_abs, vec![5.0, 2.5, 9.0]);
        assert_eq!(s.max_abs(), vec![4.0, 2.0, 6.0]);
        assert_eq!(s.mean_abs(), vec![2.5, 1.25, 4.5]);
        assert_eq!((s.min[0], s.max[0], s.tokens), (-4.0, 1.0, 2));
        assert_eq!(s.amax(), Some(6.0));
        s.add(&[f32::NAN, 0.0, 0.0], 1);
        assert_eq!(s.amax(), None);
    }

    #[test]
    fn blockwise_collection_equals_the_forward_pass() {
        let spec = SyntheticSpec {
            qkv_bias: true,
            ..SyntheticSpec::default()
        };
        let model = spec.build(11);
        let samples = vec![vec![1u32, 2, 3, 4, 5], vec![6u32, 7, 8]];
        let want = collect(&model, &samples, |_| {});
        let mut blocks = 0;
        let all = [
            InputSite::AttnIn,
            InputSite::AttnOut,
            InputSite::MlpIn,
            InputSite::MlpAct,
        ];
        let got = collect_blockwise(&model, &samples, &all, |n| blocks = n).unwrap();
        assert_eq!(blocks, spec.layers);
        let some = collect_blockwise(&model, &samples, &all[2..3], |_| {}).unwrap();
        let kept: Vec<_> = some.sites().map(|(k, _)| *k).collect();
        assert_eq!(kept, [(0, InputSite::MlpIn), (1, InputSite::MlpIn)]);
        assert_eq!(some.get(1, LinearKind::Up), got.get(1, LinearKind::Up));
        // One sample at a time runs each product over the threads, several samples one per
        // thread: per sample the same numbers, so the runs on each sample alone combine
        // exactly into the run on both.
        let alone: Vec<ActivationStats> = samples
            .iter()
            .map(|s| collect_blockwise(&model, std::slice::from_ref(s), &all, |_| {}).unwrap())
            .collect();
        for ((site, g), (a, b)) in got.sites().zip(
            alone[0]
                .sites()
                .map(|x| x.1)
                .zip(alone[1].sites().map(|x| x.1)),
        ) {
            let sum: Vec<f64> = a.sum_sq.iter().zip(&b.sum_sq).map(|(x, y)| x + y).collect();
            let max: Vec<f32> = a.max.iter().zip(&b.max).map(|(x, y)| x.max(*y)).collect();
            assert_eq!((&g.sum_sq, &g.max), (&sum, &max), "{site:?}");
        }
        assert_eq!(got.sites().count(), want.sites().count());
        for ((site, g), (site2, w)) in got.sites().zip(want.sites()) {
            assert_eq!(site, site2);
            assert_eq!((g.tokens, g.cols()), (w.tokens, w.cols()));
            // The blockwise path multiplies in bf16 (rounding ~2⁻⁹ of each output's sum of
            // |products|, the softmax weights 2⁻⁹ each), the forward pass in f32; sums of
            // squares double the relative error. Compared to the largest column's value, two
            // blocks stay within 2% (1% measured), while a wrong or missing step is O(1).
            let close = |a: &[f64], b: &[f64]| {
                let scale = b.iter().fold(1e-3f64, |m, y| m.max(y.abs()));
                a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 2e-2 * scale)
            };
            assert!(close(&g.sum_sq, &w.sum_sq), "{site:?} sum_sq");
            assert!(close(&g.sum_abs, &w.sum_abs), "{site:?} sum_abs");
        }
    }

    #[test]
    fn collects_every_site_once_per_token() {
        let spec = SyntheticSpec::default();
        let model = spec.build(7);
        let samples = vec![vec![1u32, 2, 3, 4], vec![5u32, 6, 7]];
        let mut seen = 0;
        let stats = collect(&model, &samples, |n| seen = n);
        assert_eq!(seen, 2);
        assert_eq!(stats.sites().count(), 4 * spec.layers);
        let q = stats.get(1, LinearKind::Q).unwrap();
        assert!(std::ptr::eq(q, stats.get(1, LinearKind::V).unwrap()));
        assert_eq!(q.tokens, 7);
        assert_eq!(q.cols(), spec.hidden);
        assert_eq!(
            stats.get(0, LinearKind::Down).unwrap().cols(),
            spec.intermediate
        );
        // The first block's q input is the normed embedding: check one column directly.
        let mut direct = 0.0f64;
        for s in &samples {
            let x = model.embed_tokens(s);
            let mut h = vec![0f32; x.len()];
            kernels::ops::rms_norm(&x, &model.layers[0].attn_norm, 1e-5, &mut h);
            direct += h
                .chunks_exact(spec.hidden)
                .map(|r| (r[3] as f64).powi(2))
                .sum::<f64>();
        }
        let got = stats.get(0, LinearKind::K).unwrap().sum_sq[3];
        assert!(
            // f32 sums within a sample: a few ulps of f32.
            (got - direct).abs() < 1e-6 * direct.max(1.0),
            "{got} vs {direct}"
        );
    }
}
