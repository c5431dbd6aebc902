//! The reference dequantizers against gguf-py (llama.cpp's Python package) on llama.cpp's own
//! quantized files (../shared/golden/kquants/k512: Q4_K_M and Q2_K of a mini model) and on random
//! blocks of every type, bit for bit.

mod common;

use std::path::Path;

use quant::ggml::{dequantize_row, GgmlType};
use quant::gguf::GgufFile;
use rand::{Rng, SeedableRng};

/// Runs the oracle on (type, bytes) cases and returns its f32 outputs.
fn oracle(cases: &[(GgmlType, Vec<u8>)]) -> Vec<Vec<f32>> {
    let dir = tempfile::tempdir().unwrap();
    let list: Vec<serde_json::Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (ty, bytes))| {
            let input = dir.path().join(format!("in{i}"));
            std::fs::write(&input, bytes).unwrap();
            serde_json::json!({"type": ty.name(), "input": input, "output": format!("out{i}")})
        })
        .collect();
    let cases_json = dir.path().join("cases.json");
    std::fs::write(&cases_json, serde_json::to_string(&list).unwrap()).unwrap();
    let o = common::python()
        .arg(common::oracle("gguf_dequant.py"))
        .args([&cases_json, dir.path()])
        .output()
        .unwrap();
    assert!(o.status.success(), "oracle: {}", common::stderr(&o));
    (0..cases.len())
        .map(|i| {
            std::fs::read(dir.path().join(format!("out{i}")))
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect()
}

fn ours(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    dequantize_row(ty, bytes, &mut out).unwrap();
    out
}

/// Bit equality, with NaN equal to NaN.
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}: element {i}: {a} vs {b}"
        );
    }
}

#[test]
fn llama_cpp_files_decode_like_gguf_py() {
    let k512 = common::shared().join("golden/kquants/k512");
    for file in ["mini-Q4_K_M.gguf", "mini-Q2_K.gguf", "mini-f16.gguf"] {
        let g = GgufFile::open(Path::new(&k512).join(file)).unwrap();
        let tensors: Vec<_> = g.tensors.iter().collect();
        let cases: Vec<(GgmlType, Vec<u8>)> = tensors
            .iter()
            .map(|t| (t.ty, g.tensor_data(t).to_vec()))
            .collect();
        let want = oracle(&cases);
        let mut types = std::collections::BTreeSet::new();
        for ((t, (ty, bytes)), w) in tensors.iter().zip(&cases).zip(&want) {
            assert_same(&format!("{file} {}", t.name), &ours(*ty, bytes), w);
            types.insert(ty.name());
        }
        eprintln!(
            "{file}: {} tensors of {types:?} identical to gguf-py",
            tensors.len()
        );
    }
}

#[test]
fn random_blocks_of_every_type_decode_like_gguf_py() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Q8_1 and Q8_K are activation-only types; gguf-py does not decode them.
    let types: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|t| !matches!(t, GgmlType::Q8_1 | GgmlType::Q8K))
        .collect();
    let cases: Vec<(GgmlType, Vec<u8>)> = types
        .iter()
        .map(|&ty| {
            let mut bytes: Vec<u8> = (0..ty.type_size() * 64).map(|_| rng.random()).collect();
            // Random f16/f32 scale fields would often be NaN/Inf; make scales finite and varied, by
            // overwriting the scale fields with random finite values at their documented offsets.
            for block in bytes.chunks_exact_mut(ty.type_size()) {
                let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
                let mut put = |off: usize, v: f32| block[off..off + 2].copy_from_slice(&f16(v));
                let s = rng.random_range(-2.0f32..2.0);
                let m = rng.random_range(-2.0f32..2.0);
                match ty {
                    GgmlType::Q4_0
                    | GgmlType::Q5_0
                    | GgmlType::Q8_0
                    | GgmlType::IQ4NL
                    | GgmlType::IQ4XS => put(0, s),
                    GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => {
                        put(0, s);
                        put(2, m)
                    }
                    GgmlType::Q2K => {
                        put(80, s);
                        put(82, m)
                    }
                    GgmlType::Q3K => put(108, s),
                    GgmlType::Q6K => put(208, s),
                    GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => {}
                    GgmlType::Q8_1 | GgmlType::Q8K => unreachable!("filtered out above"),
                }
            }
            (ty, bytes)
        })
        .collect();
    let want = oracle(&cases);
    for ((ty, bytes), w) in cases.iter().zip(&want) {
        assert_same(ty.name(), &ours(*ty, bytes), w);
    }
}
