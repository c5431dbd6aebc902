//! Elementwise and normalization operations of the Llama graph, in f32.

/// Elements below which an elementwise operation runs on the calling thread alone.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// RMSNorm of each `w.len()`-wide row of `x` into `out`: x / sqrt(mean(x²) + eps) · w.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    assert_eq!(x.len(), out.len());
    let norm_rows = |first: usize, out: &mut [f32]| {
        for (xr, or) in x[first * n..].chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            // f64 accumulation: the mean of squares over thousands of features loses digits in
            // f32. Eight partial sums let the loop vectorize.
            let mut lanes = [0f64; 8];
            let mut chunks = xr.chunks_exact(8);
            for c in &mut chunks {
                for (s, v) in lanes.iter_mut().zip(c) {
                    *s += (*v as f64) * (*v as f64);
                }
            }
            let tail: f64 = chunks.remainder().iter().map(|v| (*v as f64).powi(2)).sum();
            let ss = lanes.iter().sum::<f64>() + tail;
            let scale = (1.0 / (ss / n as f64 + eps as f64).sqrt()) as f32;
            for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
                *o = v * scale * g;
            }
        }
    };
    if x.len() < PARALLEL_ELEMENTS {
        return norm_rows(0, out);
    }
    let rows_per_task = (PARALLEL_ELEMENTS / 4 / n).max(1);
    crate::parallel::for_each_chunk_mut(out, rows_per_task * n, |i, out| {
        norm_rows(i * rows_per_task, out)
    });
}

/// Runs `f` on matching pieces of `a` and `b`, in parallel when they are long.
fn zip_pieces(a: &mut [f32], b: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(a.len(), b.len());
    if a.len() < PARALLEL_ELEMENTS {
        return f(a, b);
    }
    let piece = PARALLEL_ELEMENTS / 4;
    crate::parallel::for_each_chunk_mut(a, piece, |i, a| f(a, &b[i * piece..][..a.len()]));
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv = 1.0 / crate::cpu::vecmath::exp_shift_sum(x, max);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// gate ← silu(gate) · up (SwiGLU).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    zip_pieces(gate, up, crate::cpu::vecmath::swiglu)
}

/// a ← a + b.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    zip_pieces(a, b, |a, b| {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    })
}

/// Adds `bias` to each row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// Log-softmax of one row of logits, in f64 for accurate log-probabilities.
pub fn log_softmax_f64(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|v| (*v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|v| *v as f64 - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5, 0.0, 4.0];
        let w = [1.0f32, 2.0, 0.5];
        let mut out = [0f32; 6];
        rms_norm(&x, &w, 1e-5, &mut out);
        for r in 0..2 {
            let row = &x[3 * r..3 * r + 3];
            let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 3.0;
            for c in 0..3 {
                let want = row[c] as f64 / (ms + 1e-5).sqrt() * w[c] as f64;
                assert!((out[3 * r + c] as f64 - want).abs() < 1e-6);
            }
        }
    }

    /// Inputs long enough to be split over the team give what the definitions give.
    #[test]
    fn long_inputs_match_definitions() {
        let (rows, n) = (100, 576);
        let x: Vec<f32> = (0..rows * n)
            .map(|i| (i as f32 * 0.013).sin() * 3.0)
            .collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let mut out = vec![0f32; rows * n];
        rms_norm(&x, &w, 1e-5, &mut out);
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n as f64;
            for c in 0..n {
                let want = row[c] as f64 / (ms + 1e-5).sqrt() * w[c] as f64;
                assert!((out[r * n + c] as f64 - want).abs() < 2e-6 * want.abs().max(1.0));
            }
        }
        let mut a = x.clone();
        add_assign(&mut a, &out);
        assert!(a.iter().zip(&x).zip(&out).all(|((s, x), o)| *s == x + o));
        let mut g = x.clone();
        swiglu(&mut g, &out);
        for ((g, x), u) in g.iter().zip(&x).zip(&out) {
            let want = *x as f64 / (1.0 + (-*x as f64).exp()) * *u as f64;
            assert!((*g as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30);
        }
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let mut x = [1000.0f32, 1001.0, 999.0];
        softmax(&mut x);
        let s: f32 = x.iter().sum();
        assert!((s - 1.0).abs() < 1e-6 && x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let lp = log_softmax_f64(&[0.5, -3.0, 2.0, 7.5]);
        assert!((lp.iter().map(|v| v.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
