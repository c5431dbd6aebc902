//! The runtime's logits on the real SmolLM2 GGUF against an independent float64 NumPy forward
//! pass (tests/oracle/llama_ref.py, weights decoded by gguf-py): exactly, with unquantized
//! activations (`QUANTIZE_ACTIVATIONS=f32`), and within the error of 8-bit activations on the
//! default path, which computes as llama.cpp does.

mod common;

use common::reference::{compare_with_reference, PROMPTS};

#[test]
fn exact_activations_match_float64_reference() {
    // Each integration-test file is its own process: set before any kernel is chosen.
    std::env::set_var("QUANTIZE_ACTIVATIONS", "f32");
    let c = compare_with_reference();
    eprintln!(
        "runtime (f32 activations) vs float64 reference: {} prompts, {} positions, top-1 agreement {}/{}, max |Δlogit| {:.5}",
        PROMPTS.len(), c.positions, c.agree, c.positions, c.max_diff
    );
    // Measured 4e-5; a wrong RoPE, norm, permutation or GQA mapping moves logits by whole units.
    assert!(c.max_diff < 1e-3, "max |Δlogit| {}", c.max_diff);
    assert_eq!(c.agree, c.positions);
}
