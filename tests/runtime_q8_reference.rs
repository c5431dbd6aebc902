//! The default path (8-bit activations in every quantized matmul, as llama.cpp computes) against
//! the float64 reference on the real SmolLM2 GGUF: differences stay within what activation
//! rounding explains. The exact path is checked tightly in runtime_reference.rs.

mod common;

#[test]
fn q8_activations_stay_close_to_float64_reference() {
    let c = common::reference::compare_with_reference();
    eprintln!(
        "runtime (8-bit activations) vs float64 reference: {} positions, top-1 agreement {}/{}, max |Δlogit| {:.4}, mean |Δlogit| {:.5}",
        c.positions, c.agree, c.positions, c.max_diff, c.mean_diff
    );
    // Measured: top-1 81/83, mean 0.198, max 1.25 (SmolLM2's outlier channels make 8-bit
    // activation blocks coarse, in llama.cpp too). Bounds at about twice that; a wrong kernel for
    // any weight type moves every logit by whole units.
    assert!(
        c.agree * 100 >= c.positions * 95,
        "top-1 agreement {}/{}",
        c.agree,
        c.positions
    );
    assert!(c.mean_diff < 0.4, "mean |Δlogit| {}", c.mean_diff);
    assert!(c.max_diff < 2.5, "max |Δlogit| {}", c.max_diff);
}
