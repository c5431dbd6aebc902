//! quant's E4M3 encoder against PyTorch's float8_e4m3fn cast (with the ±448 clamp
//! compressed-tensors and vLLM apply) on all 65,536 f16 bit patterns. Needs torch: run with
//! `QUANTIZE_PEER_PYTHON=/work/peers/venv/bin/python cargo test --test fp8_torch -- --ignored`.

mod common;

#[test]
#[ignore = "needs torch: set QUANTIZE_PEER_PYTHON"]
fn e4m3_encoder_matches_torch_on_every_f16() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("codes.bin");
    let o = std::process::Command::new(common::ct::peer_python())
        .arg(common::oracle("torch_e4m3.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let torch = std::fs::read(&out).unwrap();
    assert_eq!(torch.len(), 65536);
    let mut differ = Vec::new();
    for (bits, &want) in torch.iter().enumerate() {
        let x = half::f16::from_bits(bits as u16).to_f32();
        let got = quant::fp8::e4m3_from_f32(x);
        // torch writes 0x7F for either NaN sign; any NaN code is a NaN.
        let same = got == want || (x.is_nan() && got & 0x7F == 0x7F && want & 0x7F == 0x7F);
        if !same {
            differ.push((bits, x, got, want));
        }
    }
    eprintln!(
        "E4M3 vs torch: {} of 65536 f16 patterns differ",
        differ.len()
    );
    assert!(differ.is_empty(), "{:?}", &differ[..differ.len().min(8)]);
}
