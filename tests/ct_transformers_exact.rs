//! Our compressed-tensors folders (and llm-compressor's, with QUANTIZE_CT_ARTIFACTS) load in
//! Hugging Face transformers with compressed-tensors, and with activation quantization off on
//! both sides (`QUANTIZE_ACTIVATIONS=f32` here, `quantization_enabled = False` there) the logits
//! agree to float rounding: the runtime decodes the weights exactly as the ecosystem does.
//! Needs torch: run with `QUANTIZE_PEER_PYTHON=/work/peers/venv/bin/python cargo test --release
//! --test ct_transformers_exact -- --ignored --nocapture`.

mod common;

#[test]
#[ignore = "needs torch, transformers and compressed-tensors: set QUANTIZE_PEER_PYTHON"]
fn weights_decode_as_transformers_decodes_them() {
    // Each integration-test file is its own process: set before any kernel is chosen.
    std::env::set_var("QUANTIZE_ACTIVATIONS", "f32");
    let dir = tempfile::tempdir().unwrap();
    for (name, folder) in common::ct::folders(dir.path()) {
        let c = common::ct::compare(&folder, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!(
            "{name}: activations unquantized on both sides: {} positions, top-1 agreement {}/{}, max |Δlogit| {:.5}, mean {:.6}",
            c.positions, c.agree, c.positions, c.max_diff, c.mean_diff
        );
        // The dense folder agrees to 8e-5 (transformers_parity.rs); a wrong scale, layout or
        // code moves logits by whole units.
        assert!(c.max_diff < 2e-3, "{name}: max |Δlogit| {}", c.max_diff);
        assert_eq!(c.agree, c.positions, "{name}");
    }
}
