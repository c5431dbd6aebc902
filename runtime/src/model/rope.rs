//! Rotary position embeddings, including Llama 3 frequency scaling and linear interpolation.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use quant::hf::{LlamaConfig, RopeScaling};

/// Which dimensions rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// (x[2i], x[2i+1]): llama.cpp's layout for "llama" GGUFs, whose Q/K rows the converter
    /// permuted.
    Adjacent,
    /// (x[i], x[i + d/2]): Hugging Face's rotate-half layout (and GGUF qwen2).
    Halves,
}

#[derive(Clone, Debug)]
pub struct Rope {
    pub style: RopeStyle,
    /// Per rotated pair, radians per position.
    inv_freq: Vec<f64>,
    /// Positions are divided by this (linear scaling).
    pos_scale: f64,
    /// [`Rope::angles`] of the first positions (up to [`TABLE_POSITIONS`]), computed at first
    /// use: a calibration run rotates the same positions in every block of every sample.
    table: Arc<OnceLock<Vec<(f32, f32)>>>,
    positions: usize,
}

/// Positions whose angles [`Rope`] keeps (a table of 2 MB for 64-wide heads).
const TABLE_POSITIONS: usize = 8192;

impl Rope {
    /// `freq_factors` (GGUF `rope_freqs.weight`) divide the frequencies when present.
    pub fn new(cfg: &LlamaConfig, style: RopeStyle, freq_factors: Option<&[f32]>) -> Rope {
        let d = cfg.head_dim;
        let mut inv_freq: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64))
            .collect();
        let mut pos_scale = 1.0;
        match cfg.rope_scaling {
            None => {}
            Some(RopeScaling::Linear(f)) => pos_scale = f,
            // The GGUF carries the same scaling as precomputed factors: apply one, not both.
            Some(RopeScaling::Llama3(s)) if freq_factors.is_none() => {
                let low_wavelen = s.original_max_position_embeddings as f64 / s.low_freq_factor;
                let high_wavelen = s.original_max_position_embeddings as f64 / s.high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= s.factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (s.original_max_position_embeddings as f64 / wavelen
                            - s.low_freq_factor)
                            / (s.high_freq_factor - s.low_freq_factor);
                        *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                    }
                }
            }
            Some(RopeScaling::Llama3(_)) => {}
        }
        if let Some(ff) = freq_factors {
            for (f, k) in inv_freq.iter_mut().zip(ff) {
                *f /= *k as f64;
            }
        }
        Rope {
            style,
            inv_freq,
            pos_scale,
            table: Arc::default(),
            positions: cfg.max_position_embeddings.min(TABLE_POSITIONS),
        }
    }

    /// Rotates every head (`head_dim` wide) of one token's vector `x` for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        self.rotate(&self.angles(pos), x);
    }

    /// Rotates the query rows `q` and key rows `k` of `n_tok` tokens at positions pos0.., each
    /// position's angles computed once for both, on the team for long batches.
    pub fn apply_batch(&self, q: &mut [f32], k: &mut [f32], n_tok: usize, pos0: usize) {
        if n_tok == 0 {
            return;
        }
        let (qw, kw) = (q.len() / n_tok, k.len() / n_tok);
        let per_task = 16;
        kernels::parallel::for_each_chunk_pair_mut(
            q,
            per_task * qw,
            k,
            per_task * kw,
            |i, q, k| {
                for (t, (q, k)) in q
                    .chunks_exact_mut(qw)
                    .zip(k.chunks_exact_mut(kw))
                    .enumerate()
                {
                    let cs = self.angles(pos0 + i * per_task + t);
                    self.rotate(&cs, q);
                    self.rotate(&cs, k);
                }
            },
        );
    }

    /// (cos, sin) of each rotated pair's angle at position `pos`.
    fn angles(&self, pos: usize) -> Cow<'_, [(f32, f32)]> {
        let n = self.inv_freq.len();
        let table = self.table.get_or_init(|| {
            (0..self.positions)
                .flat_map(|p| self.computed_angles(p))
                .collect()
        });
        match table.get(pos * n..(pos + 1) * n) {
            Some(cs) => Cow::Borrowed(cs),
            None => Cow::Owned(self.computed_angles(pos)),
        }
    }

    fn computed_angles(&self, pos: usize) -> Vec<(f32, f32)> {
        let p = pos as f64 / self.pos_scale;
        self.inv_freq
            .iter()
            .map(|f| {
                let a = p * f;
                (a.cos() as f32, a.sin() as f32)
            })
            .collect()
    }

    fn rotate(&self, cs: &[(f32, f32)], x: &mut [f32]) {
        let half = self.inv_freq.len();
        for head in x.chunks_exact_mut(2 * half) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = match self.style {
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                    RopeStyle::Halves => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant::hf::{Family, Llama3Scaling};

    fn cfg(scaling: Option<RopeScaling>) -> LlamaConfig {
        LlamaConfig {
            family: Family::Llama,
            hidden_size: 8,
            intermediate_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 1,
            num_key_value_heads: 1,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: scaling,
            max_position_embeddings: 128,
            vocab_size: 4,
            tie_word_embeddings: false,
            qkv_bias: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            torch_dtype: None,
        }
    }

    #[test]
    fn styles_agree_after_permutation_and_preserve_norm() {
        // The adjacent layout is the halves layout with rows interleaved: (j, j+d/2) → (2j, 2j+1).
        let c = cfg(None);
        let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 1.0).collect();
        let mut halves = x.clone();
        Rope::new(&c, RopeStyle::Halves, None).apply(&mut halves, 17);
        let mut adj: Vec<f32> = (0..8)
            .map(|k| if k % 2 == 0 { x[k / 2] } else { x[k / 2 + 4] })
            .collect();
        Rope::new(&c, RopeStyle::Adjacent, None).apply(&mut adj, 17);
        for j in 0..4 {
            assert!(
                (adj[2 * j] - halves[j]).abs() < 1e-6
                    && (adj[2 * j + 1] - halves[j + 4]).abs() < 1e-6
            );
        }
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let n1: f32 = halves.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
    }

    #[test]
    fn batches_rotate_as_single_tokens_do() {
        let mut c = cfg(None);
        c.num_key_value_heads = 1;
        let rope = Rope::new(&c, RopeStyle::Adjacent, None);
        let n_tok = 37; // several tasks of 16 tokens, the last one partial
        let (qw, kw) = (16, 8);
        let q0: Vec<f32> = (0..n_tok * qw).map(|i| (i as f32 * 0.7).sin()).collect();
        let k0: Vec<f32> = (0..n_tok * kw).map(|i| (i as f32 * 0.3).cos()).collect();
        let (mut q, mut k) = (q0.clone(), k0.clone());
        rope.apply_batch(&mut q, &mut k, n_tok, 5);
        for t in 0..n_tok {
            let (mut qt, mut kt) = (q0[t * qw..][..qw].to_vec(), k0[t * kw..][..kw].to_vec());
            rope.apply(&mut qt, 5 + t);
            rope.apply(&mut kt, 5 + t);
            assert_eq!((&q[t * qw..][..qw], &k[t * kw..][..kw]), (&qt[..], &kt[..]));
        }
    }

    #[test]
    fn llama3_scaling_slows_only_low_frequencies() {
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 2048,
        };
        let plain = Rope::new(&cfg(None), RopeStyle::Halves, None);
        let scaled = Rope::new(&cfg(Some(RopeScaling::Llama3(s))), RopeStyle::Halves, None);
        // wavelengths 2π·10^i: 6.3 < 2048/4 stays, 6283 > 2048/1 is divided by 8, 628 is blended
        assert!(
            scaled.inv_freq[2] < plain.inv_freq[2] && scaled.inv_freq[2] > plain.inv_freq[2] / 8.0
        );
        assert_eq!(plain.inv_freq[0], scaled.inv_freq[0]);
        assert!((plain.inv_freq[3] / scaled.inv_freq[3] - 8.0).abs() < 1e-12);
    }
}
