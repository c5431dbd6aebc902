//! Bit-exactness on rows no real model has: every weight type, with and without importance
//! weights, on random rows of four magnitudes and on edge cases (zeros, constants, tiny,
//! subnormal, huge, one outlier, one-signed, sparse, rounding ties, inf, NaN), compared with the
//! sha256 of what ggml itself produced for the same input (`ggml_quantize_chunk` of llama.cpp
//! c392e50, via the harness in `fixtures/ggml_edge_rows.c`; regenerate with
//! `GGML_EDGE_HARNESS=/path/to/harness cargo test --test ggml_edge_rows -- --ignored`).
//!
//! Inputs come from integer arithmetic only, so they are identical on every platform.

use std::collections::BTreeMap;
use std::path::Path;

use quant::ggml::{quantize_rows, GgmlType};
use sha2::{Digest, Sha256};

const N: usize = 512;
const TYPES: [GgmlType; 14] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::F16,
    GgmlType::BF16,
];

/// SplitMix64: a portable, seedable integer generator.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits (exact in f32).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// Roughly Gaussian (Irwin-Hall of four uniforms), unit variance, scaled by `s`.
    fn normal(&mut self, s: f32) -> f32 {
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (sum - 2.0) * 1.732_050_8 * s
    }
}

fn rows() -> Vec<Vec<f32>> {
    let mut rng = Mix(2024);
    let mut rows = Vec::new();
    for s in [1e-3f32, 0.02, 1.0, 30.0] {
        for _ in 0..24 {
            rows.push((0..N).map(|_| rng.normal(s)).collect());
        }
    }
    let base: Vec<f32> = (0..N).map(|_| rng.normal(0.02)).collect();
    let scaled = |k: f32| base.iter().map(|v| v * k).collect::<Vec<f32>>();
    rows.push(vec![0.0; N]);
    rows.push(vec![0.75; N]);
    rows.push(vec![-0.3; N]);
    for k in [1e-6, 1e-9, 1e-20, 1e-36, 1e-40, 1e4, 1e8, 1e30] {
        rows.push(scaled(k));
    }
    let mut outlier = base.clone();
    outlier[37] = 40.0;
    rows.push(outlier);
    rows.push(base.iter().map(|v| -v.abs() - 0.01).collect());
    rows.push(base.iter().map(|v| v.abs() + 0.01).collect());
    rows.push(
        base.iter()
            .enumerate()
            .map(|(i, &v)| if i % 2 == 0 { 0.0 } else { v })
            .collect(),
    );
    rows.push((0..N).map(|i| if i == 300 { -2.5 } else { 0.0 }).collect());
    // multiples of a power of two land on rounding ties
    rows.push((0..N).map(|i| ((i % 17) as f32 - 8.0) * 0.5).collect());
    rows.push((0..N).map(|i| (i % 9) as f32 - 4.0).collect());
    let mut inf = base.clone();
    inf[5] = f32::INFINITY;
    rows.push(inf);
    let mut nan = base;
    nan[100] = f32::NAN;
    rows.push(nan);
    rows
}

fn imatrices() -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Mix(7);
    let random: Vec<f32> = (0..N).map(|_| 5.0 * rng.uniform()).collect();
    let sparse = random
        .iter()
        .enumerate()
        .map(|(j, &v)| if j % 3 == 0 { 0.0 } else { v })
        .collect();
    vec![
        ("random", random),
        ("sparse", sparse),
        ("zeros", vec![0.0; N]),
        (
            "dead_block",
            (0..N).map(|j| if j < 256 { 0.0 } else { 1.0 }).collect(),
        ),
    ]
}

/// sha256 of all rows quantized to `ty`, keyed "imatrix/type/plain|weighted".
fn our_hashes(rows: &[Vec<f32>]) -> BTreeMap<String, String> {
    let flat = rows.concat();
    let mut out = BTreeMap::new();
    for (label, im) in imatrices() {
        for ty in TYPES {
            for weighted in [false, true] {
                let mut q = vec![0u8; ty.row_bytes(N).unwrap() * rows.len()];
                quantize_rows(ty, &flat, N, &mut q, weighted.then_some(&im[..])).unwrap();
                let key = format!(
                    "{label}/{ty}/{}",
                    if weighted { "weighted" } else { "plain" }
                );
                out.insert(key, format!("{:x}", Sha256::digest(&q)));
            }
        }
    }
    out
}

fn fixture_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ggml_edge_rows.json")
}

#[test]
fn edge_rows_match_ggml_bit_for_bit() {
    let want: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(fixture_path()).unwrap()).unwrap();
    let got = our_hashes(&rows());
    assert_eq!(want.len(), got.len());
    let bad: Vec<&String> = want
        .keys()
        .filter(|k| want.get(*k) != got.get(*k))
        .collect();
    println!(
        "ggml edge rows: {}/{} variants bit-exact",
        want.len() - bad.len(),
        want.len()
    );
    assert!(bad.is_empty(), "differ from ggml: {bad:?}");
}

/// Rebuilds the fixture from ggml's own output: the harness reads `u32 rows, u32 n, f32
/// data[rows·n], f32 imatrix[n]` and writes, for each type of `TYPES` and without then with the
/// imatrix, `ggml_quantize_chunk`'s bytes.
#[test]
#[ignore = "needs a harness linked against llama.cpp's ggml"]
fn regenerate_fixture_from_ggml() {
    let harness = std::env::var("GGML_EDGE_HARNESS").expect("GGML_EDGE_HARNESS=harness binary");
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    let mut fixture = BTreeMap::new();
    for (label, im) in imatrices() {
        let mut buf = Vec::new();
        buf.extend((rows.len() as u32).to_le_bytes());
        buf.extend((N as u32).to_le_bytes());
        for v in rows.iter().flatten().chain(&im) {
            buf.extend(v.to_le_bytes());
        }
        std::fs::write(&input, &buf).unwrap();
        let ok = std::process::Command::new(&harness)
            .args([&input, &output])
            .status()
            .unwrap();
        assert!(ok.success());
        let theirs = std::fs::read(&output).unwrap();
        let mut at = 0;
        for ty in TYPES {
            for weighted in [false, true] {
                let len = ty.row_bytes(N).unwrap() * rows.len();
                let key = format!(
                    "{label}/{ty}/{}",
                    if weighted { "weighted" } else { "plain" }
                );
                fixture.insert(key, format!("{:x}", Sha256::digest(&theirs[at..at + len])));
                at += len;
            }
        }
        assert_eq!(at, theirs.len());
    }
    let json = serde_json::to_string_pretty(&fixture).unwrap();
    std::fs::write(fixture_path(), json + "\n").unwrap();
}
