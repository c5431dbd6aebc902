//! Gram matrices G += XᵀX of activation rows (GPTQ's Hessians, AWQ's output-error metric),
//! with the activations rounded to bf16 and the products summed in f32, as a bf16 model's
//! calibration computes them on an accelerator (the same arithmetic as [`crate::dense_bf16`]).
//! With AMX, 32 × 32 blocks of the lower triangle run on its tiles over chunks of tokens;
//! elsewhere a register-blocked kernel over tiles of 8 × 16 entries, tokens streamed in
//! L2-sized chunks. Blocks run in parallel. Only the lower triangle is summed: callers that need
//! the whole matrix mirror it once, after the last batch ([`mirror_lower`]).

use crate::cpu::amx;
use crate::cpu::features::features;

const TR: usize = 8;
const TC: usize = 16;
/// Tokens per pass over the tiles: a chunk of a 1536-wide input is 768 KB.
const TOKENS: usize = 128;

/// Tokens per AMX chunk: its transposed and paired copies of a 1536-wide input take 3 MB.
#[cfg(target_arch = "x86_64")]
const AMX_TOKENS: usize = 512;

/// Adds XᵀX of the `n_tok` rows of `x` (n_tok × cols), rounded to bf16, to the lower triangle
/// of `g` (cols × cols, row-major; entries above the diagonal get partial sums). Sums in f32
/// over at most one chunk of tokens before adding to `g`.
pub fn add_gram(x: &[f32], n_tok: usize, cols: usize, g: &mut [f32]) {
    add_gram_with(x, n_tok, cols, g, features().amx_bf16)
}

fn add_gram_with(x: &[f32], n_tok: usize, cols: usize, g: &mut [f32], use_amx: bool) {
    assert_eq!(x.len(), n_tok * cols);
    assert_eq!(g.len(), cols * cols);
    #[cfg(target_arch = "x86_64")]
    if use_amx {
        for t0 in (0..n_tok).step_by(AMX_TOKENS) {
            let nt = AMX_TOKENS.min(n_tok - t0);
            amx_chunk(&x[t0 * cols..(t0 + nt) * cols], nt, cols, g);
        }
        return;
    }
    let _ = use_amx;
    let mut xr = x.to_vec();
    amx::round_to_bf16(&mut xr);
    f32_gram(&xr, n_tok, cols, g);
}

/// Lower-triangle blocks of one chunk on the AMX tiles.
#[cfg(target_arch = "x86_64")]
fn amx_chunk(x: &[f32], n_tok: usize, cols: usize, g: &mut [f32]) {
    use amx::Pooled;
    const B: usize = 32;
    let cols_p = cols.next_multiple_of(B);
    let tok_p = n_tok.next_multiple_of(amx::K);
    // The A operand: features along tokens; the B operand: pairs of consecutive tokens.
    let mut xb = u16::take(tok_p * cols_p);
    amx::to_padded_bf16(x, n_tok, cols, tok_p, cols_p, &mut xb);
    let mut xt = u16::take(tok_p * cols_p);
    amx::transpose(&xb, tok_p, cols_p, &mut xt);
    let mut panels = u32::take(tok_p * cols_p / 2);
    amx::pack_token_pairs(&xb, tok_p, cols_p, &mut panels);
    let kc = tok_p / amx::K;
    crate::parallel::for_each_chunk_mut(g, B * cols, |ib, out| {
        // SAFETY: features() reported AMX.
        let tiles = unsafe { amx::Tiles::configure() };
        let mut c = [0f32; B * B];
        let nr = B.min(cols - ib * B);
        for jb in 0..=ib {
            let (b0, b1) = (
                amx::panel(&panels, kc, 2 * jb),
                amx::panel(&panels, kc, 2 * jb + 1),
            );
            // SAFETY: xt holds cols_p rows of tok_p values from row ib·32; the panels hold kc
            // tiles each; c is 32 × 32.
            unsafe {
                tiles.block_32x32(
                    amx::Operands {
                        a: xt[ib * B * tok_p..].as_ptr(),
                        a_stride: 2 * tok_p,
                        b0,
                        b1,
                        kc,
                    },
                    c.as_mut_ptr(),
                    4 * B,
                )
            };
            let nc = B.min(cols - jb * B);
            for r in 0..nr {
                let o = &mut out[r * cols + jb * B..][..nc];
                for (o, v) in o.iter_mut().zip(&c[r * B..r * B + nc]) {
                    *o += v;
                }
            }
        }
    });
    u16::give(xb);
    u16::give(xt);
    u32::give(panels);
}

/// The register-blocked f32 kernel over tiles of the lower triangle.
fn f32_gram(x: &[f32], n_tok: usize, cols: usize, g: &mut [f32]) {
    for t0 in (0..n_tok).step_by(TOKENS) {
        let nt = TOKENS.min(n_tok - t0);
        let xs = &x[t0 * cols..(t0 + nt) * cols];
        let work = |b: usize, out: &mut [f32]| {
            let i0 = b * TR;
            let nr = TR.min(cols - i0);
            // Column tiles up to and including the diagonal.
            for j0 in (0..(i0 + nr).min(cols)).step_by(TC) {
                let nc = TC.min(cols - j0);
                tile(xs, nt, cols, i0, nr, j0, nc, out);
            }
        };
        if nt * cols * cols > 1 << 20 {
            crate::parallel::for_each_chunk_mut(g, TR * cols, work);
        } else {
            g.chunks_mut(TR * cols)
                .enumerate()
                .for_each(|(b, out)| work(b, out));
        }
    }
}

/// Copies the lower triangle of `g` over the upper one, making it the full symmetric matrix.
pub fn mirror_lower(g: &mut [f32], cols: usize) {
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

    /// Both paths against a float64 sum of the bf16-rounded products, over chunk boundaries
    /// (AMX_TOKENS) and widths that are not multiples of a block.
    #[test]
    fn matches_float64_of_the_rounded_inputs_and_accumulates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (n_tok, cols) in [(1, 1), (5, 7), (130, 24), (300, 61), (257, 128), (600, 40)] {
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|i| {
                    if i % 89 == 0 {
                        0.0
                    } else {
                        rng.random_range(-2.0..2.0)
                    }
                })
                .collect();
            let r: Vec<f64> = x
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_f64())
                .collect();
            for &use_amx in amx::paths_to_test() {
                let mut g = vec![0f32; cols * cols];
                add_gram_with(&x, n_tok, cols, &mut g, use_amx);
                add_gram_with(&x, n_tok, cols, &mut g, use_amx);
                mirror_lower(&mut g, cols);
                for i in 0..cols {
                    for j in 0..cols {
                        let (mut want, mut mag) = (0f64, 0f64);
                        for t in 0..n_tok {
                            let p = r[t * cols + i] * r[t * cols + j];
                            want += 2.0 * p;
                            mag += 2.0 * p.abs();
                        }
                        let got = g[i * cols + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * mag + 1e-30,
                            "amx {use_amx} {n_tok}x{cols} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
