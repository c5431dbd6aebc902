//! Causal multi-head attention with grouped KV heads over a per-sequence cache.
//!
//! Keys are cached transposed in blocks of [`KEY_BLOCK`] positions ([`KeyBlocks`]): block b
//! holds, for each key channel c (KV head h, dimension d: c = h·head_dim + d), the values of
//! positions 16b..16b+16 side by side. A query row's scores against sixteen keys are then
//! head_dim multiply-adds of one broadcast query element by one contiguous vector, with no
//! horizontal sums. Values stay row-major; the weighted sum takes each value row once for
//! several query rows.
//!
//! Plain loops over fixed-size arrays, compiled for AVX-512 and AVX2 as well as the baseline
//! (as `cpu::vecmath`), so one source serves every CPU.

#[cfg(target_arch = "x86_64")]
use crate::cpu::features::features;
use crate::cpu::vecmath::exp_shift_sum;

/// Key positions per block of the transposed key cache.
pub const KEY_BLOCK: usize = 16;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// Keys of one layer in the transposed block layout, growing with the sequence.
#[derive(Clone, Debug, Default)]
pub struct KeyBlocks {
    /// Channels per key (n_kv_head · head_dim).
    width: usize,
    len: usize,
    data: Vec<f32>,
}

impl KeyBlocks {
    pub fn new(width: usize) -> KeyBlocks {
        KeyBlocks {
            width,
            ..Default::default()
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the keys of `k.len() / width` positions (rows of `width`).
    pub fn append(&mut self, k: &[f32]) {
        let w = self.width;
        assert!(w > 0 && k.len().is_multiple_of(w));
        for key in k.chunks_exact(w) {
            let (b, l) = (self.len / KEY_BLOCK, self.len % KEY_BLOCK);
            if l == 0 {
                self.data.resize((b + 1) * w * KEY_BLOCK, 0.0);
            }
            let block = &mut self.data[b * w * KEY_BLOCK..];
            for (c, x) in key.iter().enumerate() {
                block[c * KEY_BLOCK + l] = *x;
            }
            self.len += 1;
        }
    }

    /// Keeps the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let w = self.width;
        self.data.truncate(len.div_ceil(KEY_BLOCK) * w * KEY_BLOCK);
        let l = len % KEY_BLOCK;
        if l != 0 {
            // Positions past the end read as zero, as in a freshly grown block.
            let b = len / KEY_BLOCK;
            for c in 0..w {
                self.data[(b * w + c) * KEY_BLOCK + l..][..KEY_BLOCK - l].fill(0.0);
            }
        }
        self.len = len;
    }

    /// Channel `c` of position `j`.
    pub fn get(&self, j: usize, c: usize) -> f32 {
        assert!(j < self.len && c < self.width);
        self.data[((j / KEY_BLOCK) * self.width + c) * KEY_BLOCK + j % KEY_BLOCK]
    }
}

/// Attention of `n_tok` queries `q` (n_tok × n_head·head_dim), the first at position `pos0`, over
/// the cached keys `k` and values `v` (rows of n_kv_head·head_dim), both holding positions
/// 0..pos0+n_tok: query t sees positions 0..=pos0+t. Writes n_tok × n_head·head_dim to `out`.
pub fn causal_attention(
    s: AttnShape,
    q: &[f32],
    n_tok: usize,
    pos0: usize,
    k: &KeyBlocks,
    v: &[f32],
    out: &mut [f32],
) {
    let (n_head, n_kv, hd) = (s.n_head, s.n_kv_head, s.head_dim);
    let width = n_kv * hd;
    assert_eq!(q.len(), n_tok * n_head * hd);
    assert_eq!(out.len(), q.len());
    assert_eq!(k.width, width, "key cache width");
    assert!(k.len() >= pos0 + n_tok && v.len() >= (pos0 + n_tok) * width);
    let group = n_head / n_kv;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let args = |heads: std::ops::Range<usize>, toks: std::ops::Range<usize>| Task {
        q,
        v,
        kt: &k.data,
        n_head,
        hd,
        width,
        pos0,
        kv: heads.start / group,
        heads,
        toks,
        out: out_ptr,
    };
    if n_tok < TOKEN_BLOCK {
        // Decoding: one task per query head, each row on its own.
        let task = |i: usize| {
            let (t, h) = (i / n_head, i % n_head);
            run::<1, 8, 4>(&args(h..h + 1, t..t + 1))
        };
        crate::parallel::for_each(n_tok * n_head, task);
    } else {
        // A prompt: per KV head and block of tokens, the rows of all heads sharing it, four
        // at a time. Latest (longest) blocks first, so the last tasks to finish are short.
        let blocks = n_tok.div_ceil(TOKEN_BLOCK);
        let task = |i: usize| {
            let (h, b) = (i % n_kv, blocks - 1 - i / n_kv);
            let toks = b * TOKEN_BLOCK..((b + 1) * TOKEN_BLOCK).min(n_tok);
            run::<4, 2, 1>(&args(h * group..(h + 1) * group, toks))
        };
        crate::parallel::for_each(n_kv * blocks, task);
    }
}

/// Query tokens per task of a prompt.
const TOKEN_BLOCK: usize = 8;

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each task writes the output rows of its own tokens × heads only.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One task: the query tokens `toks` × heads `heads` (which share KV head `kv`).
struct Task<'a> {
    q: &'a [f32],
    v: &'a [f32],
    kt: &'a [f32],
    n_head: usize,
    hd: usize,
    width: usize,
    pos0: usize,
    kv: usize,
    heads: std::ops::Range<usize>,
    toks: std::ops::Range<usize>,
    out: OutPtr,
}

/// Runs a task with R query rows per step, KB key blocks per score step and JS interleaved sets
/// of value sums: R · KB score tiles and JS · R value rows in flight keep enough independent
/// multiply-adds going when R is small (decoding).
fn run<const R: usize, const KB: usize, const JS: usize>(t: &Task) {
    #[cfg(target_arch = "x86_64")]
    {
        let f = features();
        if f.avx512f && f.has_avx2_fma() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above).
            return unsafe { x86::task_avx512::<R, KB, JS>(t) };
        }
        if f.has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { x86::task_avx2::<R, KB, JS>(t) };
        }
    }
    task::<R, KB, JS>(t)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::KEY_BLOCK;
    use std::arch::x86_64::*;

    // One zmm register holds a block's sixteen scores.
    const _: () = assert!(KEY_BLOCK == 16);

    /// Scores of R query rows against NB transposed key blocks: acc[r][b][i] = Σ_d q[r][d] ·
    /// kt[b][d·16 + i].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn score_tile_avx512<const R: usize, const NB: usize>(
        q: &[&[f32]; R],
        kt: &[&[f32]; NB],
        hd: usize,
    ) -> [[[f32; KEY_BLOCK]; NB]; R] {
        let mut acc = [[_mm512_setzero_ps(); NB]; R];
        for d in 0..hd {
            let k: [__m512; NB] =
                std::array::from_fn(|b| _mm512_loadu_ps(kt[b].as_ptr().add(d * KEY_BLOCK)));
            for (acc, q) in acc.iter_mut().zip(q) {
                let qd = _mm512_set1_ps(*q.get_unchecked(d));
                for (a, k) in acc.iter_mut().zip(&k) {
                    *a = _mm512_fmadd_ps(qd, *k, *a);
                }
            }
        }
        let mut out = [[[0f32; KEY_BLOCK]; NB]; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            for (o, a) in o.iter_mut().zip(a) {
                _mm512_storeu_ps(o.as_mut_ptr(), *a);
            }
        }
        out
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn task_avx512<const R: usize, const KB: usize, const JS: usize>(t: &super::Task) {
        super::task::<R, KB, JS>(t)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn task_avx2<const R: usize, const KB: usize, const JS: usize>(t: &super::Task) {
        super::task::<R, KB, JS>(t)
    }
}

/// Scores, softmax and weighted values of one task's query rows (see `run`).
#[inline(always)]
fn task<const R: usize, const KB: usize, const JS: usize>(t: &Task) {
    let hd = t.hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // Query rows (token, head), token-major, padded with empty rows to whole steps; row r
    // sees keys 0..len(r).
    let rows: Vec<(usize, usize)> = t
        .toks
        .clone()
        .flat_map(|tok| t.heads.clone().map(move |h| (tok, h)))
        .collect();
    let len = |r: usize| rows.get(r).map_or(0, |&(tok, _)| t.pos0 + tok + 1);
    let padded = rows.len().next_multiple_of(R);
    let stride = (t.pos0 + t.toks.end).next_multiple_of(KEY_BLOCK);
    let mut qs = vec![0f32; padded * hd];
    for (r, &(tok, h)) in rows.iter().enumerate() {
        let qh = &t.q[(tok * t.n_head + h) * hd..][..hd];
        for (o, x) in qs[r * hd..(r + 1) * hd].iter_mut().zip(qh) {
            *o = x * scale;
        }
    }
    let mut p = vec![0f32; padded * stride];
    for r0 in (0..padded).step_by(R) {
        let keys = (r0..r0 + R).map(len).max().unwrap_or(0);
        let blocks = keys.div_ceil(KEY_BLOCK);
        let whole = blocks / KB * KB;
        for kb0 in (0..whole).step_by(KB) {
            score_tile::<R, KB>(t, &qs, r0, kb0, &mut p, stride);
        }
        for kb in whole..blocks {
            score_tile::<R, 1>(t, &qs, r0, kb, &mut p, stride);
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
        weighted_values::<R, 64, JS>(t, &rows, &p, stride, len);
    } else if hd.is_multiple_of(16) {
        weighted_values::<R, 16, JS>(t, &rows, &p, stride, len);
    } else {
        weighted_values::<R, 1, JS>(t, &rows, &p, stride, len);
    }
}

/// Scores of query rows r0..r0+R (scaled queries `qs`) against key blocks kb0..kb0+NB, into `p`.
#[inline(always)]
fn score_tile<const R: usize, const NB: usize>(
    t: &Task,
    qs: &[f32],
    r0: usize,
    kb0: usize,
    p: &mut [f32],
    stride: usize,
) {
    let hd = t.hd;
    let block_len = t.width * KEY_BLOCK;
    let kt: [&[f32]; NB] = std::array::from_fn(|b| {
        &t.kt[(kb0 + b) * block_len + t.kv * hd * KEY_BLOCK..][..hd * KEY_BLOCK]
    });
    let q: [&[f32]; R] = std::array::from_fn(|r| &qs[(r0 + r) * hd..][..hd]);
    #[cfg(target_arch = "x86_64")]
    if features().avx512f {
        // LLVM keeps the generic tile's R·NB·16 accumulators on the stack as scalars; one
        // zmm register per 16-key block and row holds them here.
        // SAFETY: the CPU has AVX-512F (checked above); every slice is hd·16 or hd long.
        let acc = unsafe { x86::score_tile_avx512::<R, NB>(&q, &kt, hd) };
        for (r, acc) in acc.iter().enumerate() {
            for (b, acc) in acc.iter().enumerate() {
                p[(r0 + r) * stride + (kb0 + b) * KEY_BLOCK..][..KEY_BLOCK].copy_from_slice(acc);
            }
        }
        return;
    }
    let mut acc = [[[0f32; KEY_BLOCK]; NB]; R];
    for d in 0..hd {
        for (acc, q) in acc.iter_mut().zip(q) {
            let qd = q[d];
            for (acc, kt) in acc.iter_mut().zip(kt) {
                let kd = &kt[d * KEY_BLOCK..][..KEY_BLOCK];
                for (a, k) in acc.iter_mut().zip(kd) {
                    *a = qd.mul_add(*k, *a);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (b, acc) in acc.iter().enumerate() {
            p[(r0 + r) * stride + (kb0 + b) * KEY_BLOCK..][..KEY_BLOCK].copy_from_slice(acc);
        }
    }
}

/// out[row] = Σ_j p[row][j]·v[j], R rows × D dimensions per step, keys j in JS interleaved
/// partial sums.
#[inline(always)]
fn weighted_values<const R: usize, const D: usize, const JS: usize>(
    t: &Task,
    rows: &[(usize, usize)],
    p: &[f32],
    stride: usize,
    len: impl Fn(usize) -> usize,
) {
    let off = t.kv * t.hd;
    for r0 in (0..rows.len()).step_by(R) {
        let keys = (r0..r0 + R).map(&len).max().unwrap_or(0);
        for d0 in (0..t.hd).step_by(D) {
            let mut acc = [[[0f32; D]; R]; JS];
            let step = |acc: &mut [[f32; D]; R], j: usize| {
                let vj = &t.v[j * t.width + off + d0..][..D];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let pj = p[(r0 + r) * stride + j];
                    for (a, x) in acc.iter_mut().zip(vj) {
                        *a = pj.mul_add(*x, *a);
                    }
                }
            };
            let whole = keys / JS * JS;
            for j0 in (0..whole).step_by(JS) {
                for (s, acc) in acc.iter_mut().enumerate() {
                    step(acc, j0 + s);
                }
            }
            for j in whole..keys {
                step(&mut acc[0], j);
            }
            for (r, &(tok, h)) in rows[r0..].iter().take(R).enumerate() {
                let at = (tok * t.n_head + h) * t.hd + d0;
                // SAFETY: row (tok, h) belongs to this task only and is inside the output.
                let o = unsafe { std::slice::from_raw_parts_mut(t.out.0.add(at), D) };
                for (i, o) in o.iter_mut().enumerate() {
                    *o = acc.iter().map(|a| a[r][i]).sum();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding (one task per head) and prompt (tiles of several rows) paths against float64,
    /// with a cache before the batch or not, partial token blocks and key blocks, and each
    /// value-step width (head size 64, 48, 8).
    #[test]
    fn matches_float64_attention_with_gqa() {
        for (n_head, n_kv_head, head_dim, pos0, n_tok) in [
            (4, 2, 8, 3, 5),
            (9, 3, 64, 0, 37),
            (9, 3, 64, 19, 21),
            (4, 1, 48, 5, 11),
            (2, 2, 64, 70, 1),
            (9, 3, 64, 33, 3),
            (6, 3, 16, 0, 8),
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
        let mut kt = KeyBlocks::new(width);
        // Appended in two pieces, as a cache grows.
        kt.append(&k[..pos0 * width]);
        kt.append(&k[pos0 * width..]);
        let mut got = vec![f32::NAN; q.len()];
        causal_attention(s, &q, n_tok, pos0, &kt, &v, &mut got);
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

    #[test]
    fn key_blocks_hold_every_key_and_truncate_to_zero() {
        let width = 5;
        let k: Vec<f32> = (0..37 * width).map(|i| i as f32 + 1.0).collect();
        let mut kt = KeyBlocks::new(width);
        kt.append(&k);
        assert_eq!(kt.len(), 37);
        for j in 0..37 {
            for c in 0..width {
                assert_eq!(kt.get(j, c), k[j * width + c]);
            }
        }
        kt.truncate(20);
        kt.append(&k[..width]);
        assert_eq!(
            (kt.len(), kt.get(20, 3), kt.get(19, 3)),
            (21, 4.0, k[19 * width + 3])
        );
        // Past the end of the last block: zeros, never stale keys.
        assert!(kt.data[(width + 3) * KEY_BLOCK + 5..][..KEY_BLOCK - 5]
            .iter()
            .all(|x| *x == 0.0));
        assert_eq!(kt.data.len(), 2 * width * KEY_BLOCK);
    }
}
