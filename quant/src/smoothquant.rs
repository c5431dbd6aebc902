//! SmoothQuant (Xiao et al., 2022) as llm-compressor's `SmoothQuantModifier` computes it: per
//! input channel j of the linears that read one norm's output,
//!
//!   s_j = range_j^α / w_j^(1−α),   range_j = max_j − min_j of the norm's output over the
//!   calibration tokens (the dynamic range, not max|x|), w_j = 2·max over the balance linears of
//!   max_i |W_ij|;  s_j = range_j where w_j = 0;  then s_j ≥ 1e-5.
//!
//! The norm's weight is divided by s and the linears' columns multiplied by s, which leaves the
//! full-precision function unchanged and moves activation outliers into the weights. For Llama
//! the pairs are input_layernorm → q, k, v and post_attention_layernorm → gate, up.

/// llm-compressor's floor on a smoothing scale (`MINIMUM_SMOOTHING_SCALE`).
pub const MIN_SCALE: f64 = 1e-5;

/// max_i |W_ij| of each column of a row-major [rows × cols] matrix.
pub fn column_absmax(w: &[f32], cols: usize) -> Vec<f32> {
    assert!(cols > 0 && w.len().is_multiple_of(cols));
    let mut m = vec![0f32; cols];
    for row in w.chunks_exact(cols) {
        for (m, v) in m.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    m
}

/// The smoothing scale of every channel from the activations' per-channel min and max and the
/// balance linears' combined column maxima (`column_absmax`, maximum over the linears).
pub fn smoothing_scales(
    act_min: &[f32],
    act_max: &[f32],
    w_absmax: &[f32],
    alpha: f64,
) -> Vec<f64> {
    assert!(act_min.len() == act_max.len() && act_max.len() == w_absmax.len());
    act_min
        .iter()
        .zip(act_max)
        .zip(w_absmax)
        .map(|((&lo, &hi), &w)| {
            let range = hi as f64 - lo as f64;
            let w = 2.0 * w as f64;
            let s = if w > 0.0 {
                range.powf(alpha) / w.powf(1.0 - alpha)
            } else {
                range
            };
            s.max(MIN_SCALE)
        })
        .collect()
}

/// The norm weight γ/s as stored (`round` gives the stored value), for scales `s` already in
/// the model's dtype. As llm-compressor does, the linears' columns are then multiplied by the
/// same `s` and the norm's rounding is left uncompensated: compensating it (columns times
/// γ/γ' instead) measured worse here (W8A8 SmoothQuant on SmolLM2, mean KLD 0.0263 against
/// 0.0243).
pub fn fold_into_norm(gamma: &[f32], s: &[f64], round: impl Fn(f32) -> f32) -> Vec<f32> {
    assert_eq!(gamma.len(), s.len());
    gamma
        .iter()
        .zip(s)
        .map(|(&g, &s)| round((g as f64 / s) as f32))
        .collect()
}

/// Multiplies column j of a row-major [rows × cols] matrix by `factor[j]` (in f64, one rounding).
pub fn scale_columns(w: &mut [f32], factor: &[f64]) {
    let cols = factor.len();
    assert!(cols > 0 && w.len().is_multiple_of(cols));
    for row in w.chunks_exact_mut(cols) {
        for (v, f) in row.iter_mut().zip(factor) {
            *v = (*v as f64 * f) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_follow_llm_compressor() {
        // range 4, w 2·1 = 2, α 0.5: √4/√2 = √2; zero weight column → the range itself; a dead
        // channel (range 0) → the floor.
        let s = smoothing_scales(&[-1.0, 0.0, 2.0], &[3.0, 5.0, 2.0], &[1.0, 0.0, 1.0], 0.5);
        assert!((s[0] - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(s[1], 5.0);
        assert_eq!(s[2], MIN_SCALE);
        // α = 1: all of the range moves to the weights.
        let s = smoothing_scales(&[-1.0], &[3.0], &[7.0], 1.0);
        assert_eq!(s[0], 4.0);
    }

    #[test]
    fn folding_divides_the_norm_in_the_stored_dtype() {
        let bf16 = |x: f32| half::bf16::from_f32(x).to_f32();
        let gamma = [0.7f32, 1.3, 0.0];
        let s = [3.1f64, 0.37, 2.0];
        let stored = fold_into_norm(&gamma, &s, bf16);
        for j in 0..3 {
            assert_eq!(stored[j], bf16((gamma[j] as f64 / s[j]) as f32));
        }
        assert_eq!(column_absmax(&[1.0, -3.0, -2.0, 0.5], 2), vec![2.0, 3.0]);
        let mut w = [1.0f32, 2.0, 3.0, 4.0];
        scale_columns(&mut w, &[2.0, 0.5]);
        assert_eq!(w, [2.0, 1.0, 6.0, 2.0]);
    }
}
