//! Causal multi-head attention with grouped KV heads over a per-sequence cache.

use rayon::prelude::*;

use crate::cpu::dot_f32;
use crate::cpu::vecmath::{axpy, exp_shift_sum};

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// Attention of `n_tok` queries `q` (n_tok × n_head·head_dim), the first at position `pos0`, over
/// the cached keys and values (rows of n_kv_head·head_dim, positions 0..pos0+n_tok): query t sees
/// positions 0..=pos0+t. Returns n_tok × n_head·head_dim.
pub fn causal_attention(
    s: AttnShape,
    q: &[f32],
    n_tok: usize,
    pos0: usize,
    k: &[f32],
    v: &[f32],
) -> Vec<f32> {
    let (n_head, hd) = (s.n_head, s.head_dim);
    let width = s.n_kv_head * hd;
    let group = n_head / s.n_kv_head;
    assert_eq!(q.len(), n_tok * n_head * hd);
    assert!(k.len() >= (pos0 + n_tok) * width && v.len() >= (pos0 + n_tok) * width);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; n_tok * n_head * hd];
    out.par_chunks_mut(hd)
        .enumerate()
        .for_each_init(Vec::new, |scores, (i, o)| {
            let (t, h) = (i / n_head, i % n_head);
            let off = (h / group) * hd;
            let qh = &q[i * hd..(i + 1) * hd];
            let total = pos0 + t + 1;
            scores.clear();
            scores.extend((0..total).map(|j| dot_f32(qh, &k[j * width + off..][..hd]) * scale));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = 1.0 / exp_shift_sum(scores, max);
            for (j, p) in scores.iter().enumerate() {
                axpy(p * inv, &v[j * width + off..][..hd], o);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_float64_attention_with_gqa() {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 8,
        };
        let (pos0, n_tok) = (3, 5);
        let width = s.n_kv_head * s.head_dim;
        let f = |i: usize, m: f32| ((i as f32) * m).sin();
        let q: Vec<f32> = (0..n_tok * s.n_head * s.head_dim)
            .map(|i| f(i, 0.71))
            .collect();
        let k: Vec<f32> = (0..(pos0 + n_tok) * width).map(|i| f(i, 1.37)).collect();
        let v: Vec<f32> = (0..(pos0 + n_tok) * width).map(|i| f(i, 0.53)).collect();
        let got = causal_attention(s, &q, n_tok, pos0, &k, &v);
        for t in 0..n_tok {
            for h in 0..s.n_head {
                let off = (h / 2) * s.head_dim;
                let qh = &q[(t * s.n_head + h) * s.head_dim..][..s.head_dim];
                let sc: Vec<f64> = (0..=pos0 + t)
                    .map(|j| {
                        (0..s.head_dim)
                            .map(|d| qh[d] as f64 * k[j * width + off + d] as f64)
                            .sum::<f64>()
                            / (s.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for d in 0..s.head_dim {
                    let want: f64 = sc
                        .iter()
                        .enumerate()
                        .map(|(j, x)| (x - m).exp() / z * v[j * width + off + d] as f64)
                        .sum();
                    let g = got[(t * s.n_head + h) * s.head_dim + d] as f64;
                    assert!((g - want).abs() < 1e-5, "t{t} h{h} d{d}: {g} vs {want}");
                }
            }
        }
    }
}
