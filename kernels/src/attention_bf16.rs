//! Causal self-attention of whole sequences for the calibration pipeline, computed as a bf16
//! model's is on an accelerator (and as the peers calibrate on one): q, k and v rounded to bf16,
//! scores summed in f32, the softmax numerators in f32, rounded to bf16 for the weighted sum of
//! the values (summed in f32), which is then divided by the f32 sum of the numerators, as flash
//! attention does.
//!
//! With AMX both products run on the tiles: per query head and block of 32 queries, the scores
//! against the key blocks up to the diagonal, the masked softmax of each row, then the weights
//! times the values of those keys. Elsewhere the same rounded q, k and v go through the runtime's
//! f32 attention kernel, whose softmax weights stay in f32.

use crate::attention::{causal_attention, AttnShape, KeyBlocks};
use crate::cpu::amx;
use crate::cpu::features::features;

/// Attention of the `n_tok` queries `q` (n_tok × n_head·head_dim, positions 0..n_tok) over the
/// keys `k` and values `v` of the same positions (n_tok × n_kv_head·head_dim): query t sees
/// positions 0..=t. Writes n_tok × n_head·head_dim to `out`.
pub fn causal_self_attention(
    s: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_tok: usize,
    out: &mut [f32],
) {
    with_amx(s, q, k, v, n_tok, out, features().amx_bf16)
}

fn with_amx(
    s: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_tok: usize,
    out: &mut [f32],
    use_amx: bool,
) {
    let width = s.n_kv_head * s.head_dim;
    assert_eq!(q.len(), n_tok * s.n_head * s.head_dim, "queries");
    assert_eq!(
        (k.len(), v.len()),
        (n_tok * width, n_tok * width),
        "keys, values"
    );
    assert_eq!(out.len(), q.len(), "output");
    assert!(s.n_kv_head > 0 && s.n_head.is_multiple_of(s.n_kv_head));
    if n_tok == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if use_amx {
        return tiles::attention(s, q, k, v, n_tok, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!use_amx, "AMX is detected only on x86_64");
    let rounded = |x: &[f32]| {
        let mut r = x.to_vec();
        amx::round_to_bf16(&mut r);
        r
    };
    let mut keys = KeyBlocks::new(width);
    keys.append(&rounded(k));
    causal_attention(s, &rounded(q), n_tok, 0, &keys, &rounded(v), out);
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::AttnShape;
    use crate::cpu::amx::{self, Operands, Tiles};
    use crate::cpu::vecmath::softmax_numerators;
    use crate::matrix::OutPtr;

    /// Queries (and keys) per block: one 32 × 32 result of the tiles.
    const BLOCK: usize = 32;

    /// `cols` values from column `col0` of each of the `rows` rows of `src` (rows `stride` apart)
    /// as bf16 rows of `cols_p` values, zero-padded to `rows_p` rows.
    fn gather_bf16(
        src: &[f32],
        stride: usize,
        col0: usize,
        cols: usize,
        (rows, rows_p, cols_p): (usize, usize, usize),
    ) -> Vec<u16> {
        let mut dst = vec![0u16; rows_p * cols_p];
        for (r, d) in dst.chunks_exact_mut(cols_p).take(rows).enumerate() {
            amx::convert(&src[r * stride + col0..][..cols], &mut d[..cols]);
        }
        dst
    }

    /// One KV head's operands: keys as B panels of the scores (output column = key position,
    /// shared dimension the head's channels), values as B panels of the weighted sums (output
    /// column = channel, shared dimension the key positions).
    struct KvPanels {
        keys: Vec<u32>,
        values: Vec<u32>,
    }

    pub(super) fn attention(
        s: AttnShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n_tok: usize,
        out: &mut [f32],
    ) {
        let hd = s.head_dim;
        let (qw, width) = (s.n_head * hd, s.n_kv_head * hd);
        let tok_p = n_tok.next_multiple_of(BLOCK);
        // Channels padded to whole tiles of the scores' shared dimension, and to whole pairs
        // of 16-column panels of the weighted sums.
        let hd_k = hd.next_multiple_of(amx::K);
        let hd_o = hd.next_multiple_of(2 * amx::T);
        let (kc_k, kc_v) = (hd_k / amx::K, tok_p / amx::K);
        let panels: Vec<KvPanels> = (0..s.n_kv_head)
            .map(|g| {
                let kb = gather_bf16(k, width, g * hd, hd, (n_tok, tok_p, hd_k));
                let vb = gather_bf16(v, width, g * hd, hd, (n_tok, tok_p, hd_o));
                let mut values = vec![0u32; tok_p * hd_o / 2];
                amx::pack_token_pairs(&vb, tok_p, hd_o, &mut values);
                KvPanels {
                    keys: amx::pack_panels(&kb, tok_p, hd_k),
                    values,
                }
            })
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let group = s.n_head / s.n_kv_head;
        let blocks = tok_p / BLOCK;
        let dst = OutPtr(out.as_mut_ptr());
        // Latest (longest) query blocks first, so the last tasks to finish are short.
        let task = |i: usize| {
            let (h, qb) = (i % s.n_head, blocks - 1 - i / s.n_head);
            let p = &panels[h / group];
            let t0 = qb * BLOCK;
            let rows = BLOCK.min(n_tok - t0);
            let qa = gather_bf16(&q[t0 * qw..], qw, h * hd, hd, (rows, BLOCK, hd_k));
            // Keys 0..keys cover every position the block's queries see; scores, then softmax
            // numerators (bf16 weights) and their inverse sums, then the weighted values.
            let keys = (qb + 1) * BLOCK;
            let mut scores = vec![0f32; BLOCK * keys];
            let mut weights = vec![0u16; BLOCK * keys];
            let mut o = vec![0f32; BLOCK * hd_o];
            // SAFETY: the caller found AMX (features().amx_bf16).
            let tiles = unsafe { Tiles::configure() };
            for kb in 0..=qb {
                let op = Operands {
                    a: qa.as_ptr(),
                    a_stride: 2 * hd_k,
                    b0: amx::panel(&p.keys, kc_k, 2 * kb),
                    b1: amx::panel(&p.keys, kc_k, 2 * kb + 1),
                    kc: kc_k,
                };
                // SAFETY: qa holds 32 rows of hd_k bf16; the key panels cover tok_p ≥ keys
                // positions in kc_k tiles each; scores has 32 rows of `keys` f32, columns
                // kb·32..kb·32+32 of them written here.
                unsafe { tiles.block_32x32(op, scores[kb * BLOCK..].as_mut_ptr(), 4 * keys) };
            }
            let mut inv_sums = [0f32; BLOCK];
            for (r, (sr, wr)) in scores
                .chunks_exact_mut(keys)
                .zip(weights.chunks_exact_mut(keys))
                .take(rows)
                .enumerate()
            {
                // Whole vectors: the masked scores past the diagonal (up to 15) become a large
                // negative number, whose numerators (~1e−38 each) leave the sum unchanged and
                // are then zeroed.
                let seen = t0 + r + 1;
                let whole = &mut sr[..seen.next_multiple_of(16)];
                whole[seen..].fill(-1e30);
                inv_sums[r] = 1.0 / softmax_numerators(whole, scale);
                whole[seen..].fill(0.0);
                amx::convert(whole, &mut wr[..whole.len()]);
            }
            for dp in 0..hd_o / (2 * amx::T) {
                let op = Operands {
                    a: weights.as_ptr(),
                    a_stride: 2 * keys,
                    b0: amx::panel(&p.values, kc_v, 2 * dp),
                    b1: amx::panel(&p.values, kc_v, 2 * dp + 1),
                    kc: qb + 1,
                };
                // SAFETY: weights holds 32 rows of `keys` = (qb + 1)·32 bf16; each value panel
                // has kc_v ≥ qb + 1 tiles; o has 32 rows of hd_o f32.
                unsafe { tiles.block_32x32(op, o[dp * 2 * amx::T..].as_mut_ptr(), 4 * hd_o) };
            }
            for (r, o) in o.chunks_exact(hd_o).take(rows).enumerate() {
                // SAFETY: hd values from row t0 + r < n_tok, head h: in bounds, and only this
                // task writes head h of the block's rows.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(dst.at((t0 + r) * qw + h * hd), hd) };
                for (y, x) in row.iter_mut().zip(o) {
                    *y = x * inv_sums[r];
                }
            }
        };
        crate::parallel::for_each(s.n_head * blocks, task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn bf16(v: f32) -> f64 {
        half::bf16::from_f32(v).to_f64()
    }

    /// Float64 attention of the rounded q, k, v and, per output, Σ_j p_j·|v_j|: the bound of
    /// rounding the softmax numerators to bf16 (2⁻⁸ relative each at most) is 2⁻⁸ of it.
    fn reference(s: AttnShape, q: &[f32], k: &[f32], v: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
        let hd = s.head_dim;
        let (qw, width) = (s.n_head * hd, s.n_kv_head * hd);
        let group = s.n_head / s.n_kv_head;
        let (mut out, mut mag) = (vec![0f64; n * qw], vec![0f64; n * qw]);
        for t in 0..n {
            for h in 0..s.n_head {
                let g = h / group;
                let scores: Vec<f64> = (0..=t)
                    .map(|j| {
                        (0..hd)
                            .map(|d| bf16(q[t * qw + h * hd + d]) * bf16(k[j * width + g * hd + d]))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, e) in e.iter().enumerate() {
                    for d in 0..hd {
                        let x = bf16(v[j * width + g * hd + d]);
                        out[t * qw + h * hd + d] += e / sum * x;
                        mag[t * qw + h * hd + d] += e / sum * x.abs();
                    }
                }
            }
        }
        (out, mag)
    }

    #[test]
    fn matches_float64_attention_of_the_rounded_operands() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let shapes = [(9, 3, 64), (4, 4, 32), (2, 1, 16), (3, 1, 80)];
        for (n_head, n_kv_head, head_dim) in shapes {
            let s = AttnShape {
                n_head,
                n_kv_head,
                head_dim,
            };
            for n in [1, 5, 31, 32, 33, 100] {
                let qw = n_head * head_dim;
                let width = n_kv_head * head_dim;
                // Queries with a few large rows (near one-hot softmax) and zero rows (uniform).
                let q: Vec<f32> = (0..n * qw)
                    .map(|i| match (i / head_dim) % 7 {
                        0 => 0.0,
                        3 => rng.random_range(-40.0..40.0),
                        _ => rng.random_range(-2.0..2.0),
                    })
                    .collect();
                let k: Vec<f32> = (0..n * width)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let v: Vec<f32> = (0..n * width)
                    .map(|_| rng.random_range(-5.0..5.0))
                    .collect();
                let (want, mag) = reference(s, &q, &k, &v, n);
                for &use_amx in amx::paths_to_test() {
                    let mut out = vec![f32::NAN; q.len()];
                    with_amx(s, &q, &k, &v, n, &mut out, use_amx);
                    for (i, ((got, want), mag)) in out.iter().zip(&want).zip(&mag).enumerate() {
                        let err = (*got as f64 - want).abs();
                        assert!(
                            err <= mag / 256.0 + 1e-5 * (1.0 + mag),
                            "amx {use_amx} {s:?} n {n} [{i}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
