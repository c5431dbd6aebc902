//! Causal multi-head attention with grouped KV heads over a per-sequence cache.

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
    assert_eq!(q.len(), n_tok * n_head * hd);
    assert!(k.len() >= (pos0 + n_tok) * width && v.len() >= (pos0 + n_tok) * width);
    let mut out = vec![0f32; n_tok * n_head * hd];
    if n_tok >= tiled::MIN_TOKENS && hd.is_multiple_of(tiled::LANES) {
        tiled::attention(s, q, n_tok, pos0, k, v, &mut out);
        return out;
    }
    let group = n_head / s.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    crate::parallel::for_each_chunk_mut(&mut out, hd, |i, o| {
        let (t, h) = (i / n_head, i % n_head);
        let off = (h / group) * hd;
        let qh = &q[i * hd..(i + 1) * hd];
        let total = pos0 + t + 1;
        let mut scores: Vec<f32> = (0..total)
            .map(|j| dot_f32(qh, &k[j * width + off..][..hd]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv = 1.0 / exp_shift_sum(&mut scores, max);
        for (j, p) in scores.iter().enumerate() {
            axpy(p * inv, &v[j * width + off..][..hd], o);
        }
    });
    out
}

/// Attention of a prompt batch in tiles: per KV head and block of query tokens, the scores of
/// all the block's query rows (its tokens × the heads sharing that KV head) against sixteen keys
/// at a time from a transposed copy of the keys, then the weighted sum of values four query
/// rows at a time, so every loaded key and value serves many rows. Plain loops over fixed-size
/// arrays, compiled for AVX-512 and AVX2 as well as the baseline (as `vecmath`).
mod tiled {
    use super::AttnShape;
    use crate::cpu::features::features;
    use crate::cpu::vecmath::exp_shift_sum;

    /// Below this many query tokens the per-row path is faster (no transposed copy to make).
    pub const MIN_TOKENS: usize = 4;
    /// Keys per score tile; head dimensions must be a multiple of it.
    pub const LANES: usize = 16;
    /// Query tokens per task.
    const BLOCK: usize = 8;
    /// Query rows per step of the value sum.
    const ROWS: usize = 4;

    pub fn attention(
        s: AttnShape,
        q: &[f32],
        n_tok: usize,
        pos0: usize,
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) {
        let (n_head, n_kv, hd) = (s.n_head, s.n_kv_head, s.head_dim);
        let width = n_kv * hd;
        let n_keys = pos0 + n_tok;
        let key_blocks = n_keys.div_ceil(LANES);
        // kt[h][b][d][l] = key 16b + l, dimension d, of KV head h (zero past the last key).
        let mut kt = vec![0f32; n_kv * key_blocks * hd * LANES];
        crate::parallel::for_each_chunk_mut(&mut kt, key_blocks * hd * LANES, |h, kt| {
            for (j, key) in k.chunks_exact(width).take(n_keys).enumerate() {
                let (b, l) = (j / LANES, j % LANES);
                for (d, x) in key[h * hd..(h + 1) * hd].iter().enumerate() {
                    kt[(b * hd + d) * LANES + l] = *x;
                }
            }
        });
        let blocks = n_tok.div_ceil(BLOCK);
        let group = n_head / n_kv;
        let out_ptr = OutPtr(out.as_mut_ptr());
        let task = |i: usize| {
            // Latest (longest) blocks first, so the last tasks to finish are short.
            let (h, b) = (i % n_kv, blocks - 1 - i / n_kv);
            let toks = b * BLOCK..((b + 1) * BLOCK).min(n_tok);
            let kt = &kt[h * key_blocks * hd * LANES..][..key_blocks * hd * LANES];
            let args = Block {
                q,
                v,
                kt,
                n_head,
                hd,
                width,
                pos0,
                kv: h,
                heads: h * group..(h + 1) * group,
                toks,
                out: out_ptr,
            };
            #[cfg(target_arch = "x86_64")]
            {
                let f = features();
                if f.avx512f && f.has_avx2_fma() {
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above).
                    return unsafe { x86::block_avx512(&args) };
                }
                if f.has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    return unsafe { x86::block_avx2(&args) };
                }
            }
            block(&args)
        };
        crate::parallel::for_each(n_kv * blocks, task);
    }

    #[derive(Clone, Copy)]
    struct OutPtr(*mut f32);
    // SAFETY: each task writes the output rows of its own tokens × heads only.
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}

    /// One task: the query tokens `toks` × heads `heads` (which share one KV head).
    struct Block<'a> {
        q: &'a [f32],
        v: &'a [f32],
        kt: &'a [f32],
        n_head: usize,
        hd: usize,
        width: usize,
        pos0: usize,
        /// The KV head, and the query heads that share it.
        kv: usize,
        heads: std::ops::Range<usize>,
        toks: std::ops::Range<usize>,
        out: OutPtr,
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        #[target_feature(enable = "avx512f,avx2,fma")]
        pub unsafe fn block_avx512(b: &super::Block) {
            super::block(b)
        }
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn block_avx2(b: &super::Block) {
            super::block(b)
        }
    }

    #[inline(always)]
    fn block(b: &Block) {
        let hd = b.hd;
        let scale = 1.0 / (hd as f32).sqrt();
        // Query rows (token, head), token-major, padded with empty rows to whole steps; row r
        // sees keys 0..len(r).
        let rows: Vec<(usize, usize)> = b
            .toks
            .clone()
            .flat_map(|t| b.heads.clone().map(move |h| (t, h)))
            .collect();
        let len = |r: usize| rows.get(r).map_or(0, |&(t, _)| b.pos0 + t + 1);
        let padded = rows.len().next_multiple_of(ROWS);
        let stride = (b.pos0 + b.toks.end).next_multiple_of(LANES);
        let mut qs = vec![0f32; padded * hd];
        for (r, &(t, h)) in rows.iter().enumerate() {
            let qh = &b.q[(t * b.n_head + h) * hd..][..hd];
            for (o, x) in qs[r * hd..(r + 1) * hd].iter_mut().zip(qh) {
                *o = x * scale;
            }
        }
        // Scores, ROWS query rows × LANES keys per step.
        let mut p = vec![0f32; padded * stride];
        for r0 in (0..padded).step_by(ROWS) {
            let keys = (r0..r0 + ROWS).map(len).max().unwrap_or(0);
            for kb in 0..keys.div_ceil(LANES) {
                let kt = &b.kt[kb * hd * LANES..][..hd * LANES];
                let mut acc = [[0f32; LANES]; ROWS];
                for (d, kd) in kt.chunks_exact(LANES).enumerate() {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let qd = qs[(r0 + r) * hd + d];
                        for (a, k) in acc.iter_mut().zip(kd) {
                            *a = qd.mul_add(*k, *a);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    p[(r0 + r) * stride + kb * LANES..][..LANES].copy_from_slice(acc);
                }
            }
        }
        for r in 0..rows.len() {
            let pr = &mut p[r * stride..(r + 1) * stride];
            let (scores, rest) = pr.split_at_mut(len(r));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = 1.0 / exp_shift_sum(scores, max);
            scores.iter_mut().for_each(|x| *x *= inv);
            rest.iter_mut().for_each(|x| *x = 0.0);
        }
        if hd.is_multiple_of(64) {
            weighted_values::<64>(b, &rows, &p, stride, len);
        } else {
            weighted_values::<LANES>(b, &rows, &p, stride, len);
        }
    }

    /// out[row] = Σ_j p[row][j]·v[j], ROWS rows × D dimensions per step.
    #[inline(always)]
    fn weighted_values<const D: usize>(
        b: &Block,
        rows: &[(usize, usize)],
        p: &[f32],
        stride: usize,
        len: impl Fn(usize) -> usize,
    ) {
        let off = b.kv * b.hd;
        for r0 in (0..rows.len()).step_by(ROWS) {
            let keys = (r0..r0 + ROWS).map(&len).max().unwrap_or(0);
            for d0 in (0..b.hd).step_by(D) {
                let mut acc = [[0f32; D]; ROWS];
                for j in 0..keys {
                    let vj = &b.v[j * b.width + off + d0..][..D];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pj = p[(r0 + r) * stride + j];
                        for (a, x) in acc.iter_mut().zip(vj) {
                            *a = pj.mul_add(*x, *a);
                        }
                    }
                }
                for (acc, &(t, h)) in acc.iter().zip(&rows[r0..]) {
                    let at = (t * b.n_head + h) * b.hd + d0;
                    // SAFETY: row (t, h) belongs to this task only and is inside the output.
                    let o = unsafe { std::slice::from_raw_parts_mut(b.out.0.add(at), D) };
                    o.copy_from_slice(acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths (per row below `tiled::MIN_TOKENS` query tokens or for head sizes that are not
    /// a multiple of 16, tiled otherwise) against float64, with a cache before the batch or not,
    /// partial query blocks and key tiles, and both value-step widths (head size 64 and 48).
    #[test]
    fn matches_float64_attention_with_gqa() {
        for (n_head, n_kv_head, head_dim, pos0, n_tok) in [
            (4, 2, 8, 3, 5),
            (9, 3, 64, 0, 37),
            (9, 3, 64, 19, 21),
            (4, 1, 48, 5, 11),
            (2, 2, 64, 70, 1),
            (6, 3, 16, 0, 4),
        ] {
            let s = AttnShape {
                n_head,
                n_kv_head,
                head_dim,
            };
            check(s, pos0, n_tok);
        }
    }

    fn check(s: AttnShape, pos0: usize, n_tok: usize) {
        let width = s.n_kv_head * s.head_dim;
        let group = s.n_head / s.n_kv_head;
        let f = |i: usize, m: f32| ((i as f32) * m).sin();
        let q: Vec<f32> = (0..n_tok * s.n_head * s.head_dim)
            .map(|i| f(i, 0.71))
            .collect();
        let k: Vec<f32> = (0..(pos0 + n_tok) * width).map(|i| f(i, 1.37)).collect();
        let v: Vec<f32> = (0..(pos0 + n_tok) * width).map(|i| f(i, 0.53)).collect();
        let got = causal_attention(s, &q, n_tok, pos0, &k, &v);
        for t in 0..n_tok {
            for h in 0..s.n_head {
                let off = (h / group) * s.head_dim;
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
                    assert!(
                        (g - want).abs() < 1e-5,
                        "{s:?} pos0={pos0} t{t} h{h} d{d}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
