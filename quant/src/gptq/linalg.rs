//! Dense symmetric linear algebra in f64 for GPTQ: Cholesky factorization and the upper
//! Cholesky factor of the inverse, blocked and parallel over rows (the Hessians of a block's
//! linears are up to a few thousand wide and are factored once per input).

use rayon::prelude::*;

use super::vector::dots;

/// Rows of the diagonal block factored serially; the rest of each panel is updated in parallel.
const NB: usize = 64;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    dots(a, [b])[0]
}

/// In-place lower Cholesky factorization A = L·Lᵀ of the symmetric n × n row-major `a` (only
/// the lower triangle is read; the strict upper triangle is left as it was). Fails with the
/// index of the first non-positive pivot.
pub fn cholesky_lower(a: &mut [f64], n: usize) -> Result<(), usize> {
    assert_eq!(a.len(), n * n);
    for k0 in (0..n).step_by(NB) {
        let k1 = (k0 + NB).min(n);
        // Diagonal block, left-looking by rows: earlier panels are already subtracted.
        for i in k0..k1 {
            for j in k0..=i {
                let s = a[i * n + j] - dot(&a[i * n + k0..i * n + j], &a[j * n + k0..j * n + j]);
                if i == j {
                    if !(s > 0.0 && s.is_finite()) {
                        return Err(i);
                    }
                    a[i * n + i] = s.sqrt();
                } else {
                    a[i * n + j] = s / a[j * n + j];
                }
            }
        }
        let (top, rest) = a.split_at_mut(k1 * n);
        let diag = &top[k0 * n..];
        // Panel below the diagonal block: each row solves against the block's factor.
        rest.par_chunks_mut(n).for_each(|row| {
            for j in k0..k1 {
                let lj = &diag[(j - k0) * n..(j - k0 + 1) * n];
                let s = row[j] - dot(&row[k0..j], &lj[k0..j]);
                row[j] = s / lj[j];
            }
        });
        // Trailing update of the lower triangle: A22 −= L21·L21ᵀ.
        let panel: Vec<f64> = rest
            .chunks_exact(n)
            .flat_map(|row| row[k0..k1].iter().copied())
            .collect();
        let w = k1 - k0;
        rest.par_chunks_mut(n).enumerate().for_each(|(ii, row)| {
            let li = &panel[ii * w..(ii + 1) * w];
            let p = |jj: usize| &panel[jj * w..(jj + 1) * w];
            let mut jj = 0;
            while jj + 4 <= ii + 1 {
                let d = dots(li, [p(jj), p(jj + 1), p(jj + 2), p(jj + 3)]);
                for (k, v) in d.iter().enumerate() {
                    row[k1 + jj + k] -= v;
                }
                jj += 4;
            }
            for jj in jj..=ii {
                row[k1 + jj] -= dot(li, p(jj));
            }
        });
    }
    Ok(())
}

/// The inverse of the lower-triangular `l` (row-major n × n, upper triangle ignored), as a
/// lower-triangular row-major matrix. Blocks of 8 columns run in parallel; within a block every
/// row of L is read once for the 8 forward substitutions.
pub fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    const COLS: usize = 8;
    // Each block holds its columns of X = L⁻¹ as rows (zero above the diagonal, so every
    // substitution step can sum from the block's first column).
    let blocks: Vec<Vec<f64>> = (0..n.div_ceil(COLS))
        .into_par_iter()
        .map(|b| {
            let j0 = b * COLS;
            let cols = COLS.min(n - j0);
            let mut x = vec![0f64; COLS * n];
            for i in j0..n {
                let lrow = &l[i * n + j0..i * n + i];
                let d: [f64; COLS] = {
                    let r = |c: usize| &x[c * n + j0..(c + 1) * n];
                    dots(lrow, [r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7)])
                };
                let lii = l[i * n + i];
                for (c, dc) in d.iter().enumerate().take(cols) {
                    let j = j0 + c;
                    x[c * n + i] = match i.cmp(&j) {
                        std::cmp::Ordering::Less => 0.0,
                        std::cmp::Ordering::Equal => 1.0 / lii,
                        std::cmp::Ordering::Greater => -dc / lii,
                    };
                }
            }
            x
        })
        .collect();
    let mut inv = vec![0f64; n * n];
    for (b, x) in blocks.iter().enumerate() {
        for (c, xc) in x.chunks_exact(n).enumerate().take(COLS.min(n - b * COLS)) {
            let j = b * COLS + c;
            for i in j..n {
                inv[i * n + j] = xc[i];
            }
        }
    }
    inv
}

/// The upper-triangular U with H⁻¹ = Uᵀ·U (what GPTQ's `cholesky(cholesky_inverse(cholesky(H)),
/// upper=True)` computes), for the symmetric positive definite `h`.
///
/// Factoring the reversed matrix J·H·J = L·Lᵀ gives H = R·Rᵀ with R = J·L·J upper triangular,
/// so H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L⁻¹·J: one factorization and one triangular inverse.
pub fn inverse_upper_factor(h: &[f64], n: usize) -> Result<Vec<f64>, usize> {
    let mut a = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    cholesky_lower(&mut a, n).map_err(|i| n - 1 - i)?;
    let linv = invert_lower(&a, n);
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = linv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = n + 5;
        let x: Vec<f64> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..m).map(|t| x[t * n + i] * x[t * n + j]).sum::<f64>();
            }
            h[i * n + i] += 0.1;
        }
        h
    }

    #[test]
    fn cholesky_reproduces_the_matrix() {
        for n in [1, 7, 64, 65, 150] {
            let h = spd(n, n as u64);
            let mut l = h.clone();
            cholesky_lower(&mut l, n).unwrap();
            for i in 0..n {
                for j in 0..=i {
                    let s: f64 = (0..=j).map(|k| l[i * n + k] * l[j * n + k]).sum();
                    assert!(
                        (s - h[i * n + j]).abs() < 1e-9 * h[i * n + i],
                        "n={n} {i},{j}"
                    );
                }
            }
        }
    }

    #[test]
    fn inverse_factor_times_h_is_identity() {
        for n in [1, 5, 64, 130] {
            let h = spd(n, 100 + n as u64);
            let u = inverse_upper_factor(&h, n).unwrap();
            for i in 0..n {
                assert!(u[i * n + i] > 0.0);
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
            // (UᵀU)·H = I.
            let mut hinv = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    hinv[i * n + j] = (0..=i.min(j)).map(|k| u[k * n + i] * u[k * n + j]).sum();
                }
            }
            for i in 0..n {
                for j in 0..n {
                    let p: f64 = (0..n).map(|k| hinv[i * n + k] * h[k * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((p - want).abs() < 1e-8, "n={n} ({i},{j}) = {p}");
                }
            }
        }
    }

    #[test]
    fn indefinite_and_non_finite_matrices_fail() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert_eq!(cholesky_lower(&mut a, 2), Err(1));
        let mut a = vec![f64::NAN, 0.0, 0.0, 1.0];
        assert_eq!(cholesky_lower(&mut a, 2), Err(0));
        assert!(inverse_upper_factor(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
    }
}
