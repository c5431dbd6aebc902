//! Gram matrices G += XᵀX of activation rows (GPTQ's Hessians, AWQ's output-error metric): a
//! register-blocked kernel over tiles of 8 × 16 entries of the lower triangle, tokens streamed
//! in L2-sized chunks, tiles in parallel, the upper triangle mirrored at the end.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::cpu::features::features;

const TR: usize = 8;
const TC: usize = 16;
/// Tokens per pass over the tiles: a chunk of a 1536-wide input is 768 KB.
const TOKENS: usize = 128;

/// Adds XᵀX of the `n_tok` rows of `x` (n_tok × cols) to the symmetric `g` (cols × cols,
/// row-major). Sums in f32 over at most one chunk of tokens before adding to `g`.
pub fn add_gram(x: &[f32], n_tok: usize, cols: usize, g: &mut [f32]) {
    assert_eq!(x.len(), n_tok * cols);
    assert_eq!(g.len(), cols * cols);
    for t0 in (0..n_tok).step_by(TOKENS) {
        let nt = TOKENS.min(n_tok - t0);
        let xs = &x[t0 * cols..(t0 + nt) * cols];
        let rows: Vec<(usize, &mut [f32])> = g.chunks_mut(TR * cols).enumerate().collect();
        let work = |(b, out): (usize, &mut [f32])| {
            let i0 = b * TR;
            let nr = TR.min(cols - i0);
            // Column tiles up to and including the diagonal.
            for j0 in (0..(i0 + nr).min(cols)).step_by(TC) {
                let nc = TC.min(cols - j0);
                tile(xs, nt, cols, i0, nr, j0, nc, out);
            }
        };
        if nt * cols * cols > 1 << 20 {
            rows.into_par_iter().for_each(work);
        } else {
            rows.into_iter().for_each(work);
        }
    }
    // Mirror the lower triangle (tiles also wrote some entries above the diagonal, partially
    // summed across calls; the lower ones are authoritative).
    for i in 0..cols {
        for j in i + 1..cols {
            g[i * cols + j] = g[j * cols + i];
        }
    }
}

/// out[r·cols + j0 + c] += Σ_t x[t, i0 + r]·x[t, j0 + c] for r < nr, c < nc.
#[allow(clippy::too_many_arguments)]
fn tile(
    x: &[f32],
    nt: usize,
    cols: usize,
    i0: usize,
    nr: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if nr == TR && nc == TC {
        let f = features();
        if f.avx512f {
            // SAFETY: AVX-512F is present; the tile lies inside x (nt rows of cols) and out.
            unsafe { x86::tile_avx512(x, nt, cols, i0, j0, out) };
            return;
        }
        if f.has_avx2_fma() {
            // SAFETY: AVX2 and FMA are present; same bounds.
            unsafe { x86::tile_avx2(x, nt, cols, i0, j0, out) };
            return;
        }
    }
    let mut acc = [[0f32; TC]; TR];
    for t in 0..nt {
        let row = &x[t * cols..(t + 1) * cols];
        for (r, a) in acc.iter_mut().enumerate().take(nr) {
            let xi = row[i0 + r];
            for (c, v) in a.iter_mut().enumerate().take(nc) {
                *v += xi * row[j0 + c];
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(nr) {
        for (c, v) in a.iter().enumerate().take(nc) {
            out[r * cols + j0 + c] += v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::TR;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(
        x: &[f32],
        nt: usize,
        cols: usize,
        i0: usize,
        j0: usize,
        out: &mut [f32],
    ) {
        let mut acc = [_mm512_setzero_ps(); TR];
        let p = x.as_ptr();
        for t in 0..nt {
            let row = p.add(t * cols);
            let v = _mm512_loadu_ps(row.add(j0));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(i0 + r)), v, *a);
            }
        }
        let o = out.as_mut_ptr();
        for (r, a) in acc.iter().enumerate() {
            let q = o.add(r * cols + j0);
            _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), *a));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(
        x: &[f32],
        nt: usize,
        cols: usize,
        i0: usize,
        j0: usize,
        out: &mut [f32],
    ) {
        // Two halves of 8 rows each: 8 accumulators of two vectors would spill.
        for h in 0..2 {
            let mut acc = [_mm256_setzero_ps(); 8];
            let p = x.as_ptr();
            for t in 0..nt {
                let row = p.add(t * cols);
                let v0 = _mm256_loadu_ps(row.add(j0));
                let v1 = _mm256_loadu_ps(row.add(j0 + 8));
                for r in 0..4 {
                    let b = _mm256_set1_ps(*row.add(i0 + 4 * h + r));
                    acc[2 * r] = _mm256_fmadd_ps(b, v0, acc[2 * r]);
                    acc[2 * r + 1] = _mm256_fmadd_ps(b, v1, acc[2 * r + 1]);
                }
            }
            let o = out.as_mut_ptr();
            for r in 0..4 {
                let q = o.add((4 * h + r) * cols + j0);
                _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), acc[2 * r]));
                let q = q.add(8);
                _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), acc[2 * r + 1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_float64_and_accumulates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (n_tok, cols) in [(1, 1), (5, 7), (130, 24), (300, 61), (257, 128)] {
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let mut g = vec![0f32; cols * cols];
            add_gram(&x, n_tok, cols, &mut g);
            add_gram(&x, n_tok, cols, &mut g);
            for i in 0..cols {
                for j in 0..cols {
                    let (mut want, mut mag) = (0f64, 0f64);
                    for t in 0..n_tok {
                        let p = x[t * cols + i] as f64 * x[t * cols + j] as f64;
                        want += 2.0 * p;
                        mag += 2.0 * p.abs();
                    }
                    let got = g[i * cols + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * mag + 1e-6,
                        "{n_tok}x{cols} ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
