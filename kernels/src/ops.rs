//! Elementwise and normalization operations of the Llama graph, in f32.

/// RMSNorm of each `w.len()`-wide row of `x` into `out`: x / sqrt(mean(x²) + eps) · w.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    assert_eq!(x.len(), out.len());
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        // f64 accumulation: the mean of squares over thousands of features loses digits in f32.
        let ss: f64 = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum();
        let scale = (1.0 / (ss / n as f64 + eps as f64).sqrt()) as f32;
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
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
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// a ← a + b.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
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
