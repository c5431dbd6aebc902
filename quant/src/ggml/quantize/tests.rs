//! Round trips through the reference dequantizer (the oracle), with the error measured in f64,
//! on random rows and on the edge cases real weights contain.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::ggml::dequantize_row;

/// Every type quantize_row writes as a weight, with the largest relative RMS error allowed on
/// Gaussian rows (measured errors sit at roughly half these).
const WEIGHT_TYPES: [(GgmlType, f64); 15] = [
    (GgmlType::F32, 0.0),
    (GgmlType::F16, 0.001),
    (GgmlType::BF16, 0.005),
    (GgmlType::Q8_0, 0.01),
    (GgmlType::Q6K, 0.03),
    (GgmlType::Q5_0, 0.06),
    (GgmlType::Q5_1, 0.06),
    (GgmlType::Q5K, 0.06),
    (GgmlType::Q4_0, 0.12),
    (GgmlType::Q4_1, 0.12),
    (GgmlType::Q4K, 0.12),
    (GgmlType::IQ4NL, 0.12),
    (GgmlType::IQ4XS, 0.12),
    (GgmlType::Q3K, 0.25),
    (GgmlType::Q2K, 0.5),
];

const N: usize = 512;

fn gaussian(rng: &mut StdRng, n: usize, sigma: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box-Muller
            let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            sigma * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

fn round_trip(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> Vec<f32> {
    round_trip_bytes(ty, x, imatrix).1
}

fn round_trip_bytes(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q, imatrix).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    (q, y)
}

/// RMS error relative to the RMS of the row, in f64.
fn relative_rmse(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let sig: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    (err / sig).sqrt()
}

#[test]
fn random_rows_round_trip_within_bounds() {
    let mut rng = StdRng::seed_from_u64(1);
    let imatrix: Vec<f32> = (0..N).map(|_| rng.random_range(0.01..4.0)).collect();
    for (ty, bound) in WEIGHT_TYPES {
        for trial in 0..8 {
            let x = gaussian(&mut rng, N, 0.02);
            for w in [None, Some(&imatrix[..])] {
                let e = relative_rmse(&x, &round_trip(ty, &x, w));
                assert!(
                    e <= bound,
                    "{ty} trial {trial} imatrix {}: relative RMSE {e:.4} > {bound}",
                    w.is_some()
                );
            }
        }
    }
}

#[test]
fn an_imatrix_lowers_the_weighted_error_where_it_points() {
    // Columns the imatrix marks 100x more important must come out closer than without it.
    let mut rng = StdRng::seed_from_u64(2);
    let imatrix: Vec<f32> = (0..N)
        .map(|j| if j % 8 == 0 { 100.0 } else { 1.0 })
        .collect();
    for (ty, _) in WEIGHT_TYPES
        .iter()
        .filter(|(t, _)| *t != GgmlType::Q8_0 && t.is_quantized())
    {
        let (mut plain, mut weighted) = (0f64, 0f64);
        for _ in 0..16 {
            let x = gaussian(&mut rng, N, 1.0);
            let err = |y: Vec<f32>| -> f64 {
                (0..N)
                    .step_by(8)
                    .map(|j| (x[j] as f64 - y[j] as f64).powi(2))
                    .sum()
            };
            plain += err(round_trip(*ty, &x, None));
            weighted += err(round_trip(*ty, &x, Some(&imatrix)));
        }
        assert!(weighted < plain, "{ty}: {weighted} >= {plain}");
    }
}

/// The edge cases of the golden model's blk.0.ffn_up and a few more.
fn edge_rows(rng: &mut StdRng) -> Vec<(&'static str, Vec<f32>)> {
    let base = gaussian(rng, N, 0.02);
    let mut outlier = base.clone();
    outlier[37] = 40.0;
    vec![
        ("zeros", vec![0.0; N]),
        ("constant", vec![0.75; N]),
        ("negative constant", vec![-0.3; N]),
        ("tiny", base.iter().map(|v| v * 1e-6).collect()),
        ("subnormal", base.iter().map(|v| v * 1e-36).collect()),
        ("one outlier", outlier),
        (
            "all negative",
            base.iter().map(|v| -v.abs() - 0.01).collect(),
        ),
        (
            "all positive",
            base.iter().map(|v| v.abs() + 0.01).collect(),
        ),
        (
            "every other zero",
            base.iter()
                .enumerate()
                .map(|(i, v)| if i % 2 == 0 { 0.0 } else { *v })
                .collect(),
        ),
        ("large", base.iter().map(|v| v * 5e4).collect()),
        (
            "one nonzero",
            (0..N).map(|i| if i == 300 { -2.5 } else { 0.0 }).collect(),
        ),
    ]
}

#[test]
fn edge_rows_stay_finite_and_close() {
    let mut rng = StdRng::seed_from_u64(3);
    let rows = edge_rows(&mut rng);
    let positive: Vec<f32> = (0..N).map(|_| rng.random_range(0.01..4.0)).collect();
    // real imatrices have dead columns; keep each 16-column group partly alive
    let sparse: Vec<f32> = positive
        .iter()
        .enumerate()
        .map(|(j, &v)| if j % 3 == 0 { 0.0 } else { v })
        .collect();
    for (ty, bound) in WEIGHT_TYPES {
        for (name, x) in &rows {
            for w in [None, Some(&positive[..]), Some(&sparse[..])] {
                let what = format!("{ty} {name} imatrix={}", w.is_some());
                let (q, y) = round_trip_bytes(ty, x, w);
                if *name == "subnormal" && w.is_some() && first_non_finite(ty, &q).is_some() {
                    // x² underflows, every weight is 0 and ggml's scale solve divides 0 by 0;
                    // llama-quantize's validation then rejects the tensor, as quantize_model does
                    continue;
                }
                assert!(y.iter().all(|v| v.is_finite()), "{what}: non-finite output");
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                if amax == 0.0 {
                    assert!(y.iter().all(|&v| v == 0.0), "{what}: zeros must stay zeros");
                    continue;
                }
                if matches!(*name, "tiny" | "subnormal") {
                    // below fp16's range scales underflow (to zero, as in ggml) and offsets
                    // round to the smallest subnormal: bounded, not accurate
                    assert!(
                        y.iter().zip(x).all(|(a, b)| (a - b).abs() <= 2.0 * amax),
                        "{what}"
                    );
                    continue;
                }
                if matches!(ty, GgmlType::F16) && *name == "large" {
                    continue; // values over 65504 have no f16
                }
                let i = x.iter().position(|v| v.abs() == amax).unwrap();
                if w.is_some_and(|w| w[i] == 0.0) {
                    continue; // a column the imatrix calls irrelevant may be sacrificed
                }
                // an outlier may crush its neighbours, but must itself survive
                let max_err = x
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let e = relative_rmse(x, &y);
                assert!(
                    e <= bound.max(1e-6) * 2.0 || max_err <= 0.6 * amax,
                    "{what}: relative RMSE {e:.4}, max error {max_err} of {amax}"
                );
                assert!(
                    (x[i] - y[i]).abs() <= 0.35 * amax,
                    "{what}: extreme {} came back as {}",
                    x[i],
                    y[i]
                );
            }
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    let x = vec![0.5f32; 256];
    let mut q = vec![0u8; GgmlType::Q4K.type_size()];
    assert!(quantize_row(GgmlType::Q4K, &x, &mut q, None).is_ok());
    let e = quantize_row(GgmlType::Q4K, &x[..255], &mut q, None).unwrap_err();
    assert!(matches!(
        e,
        QuantizeError::Codec(CodecError::RowNotBlockAligned { .. })
    ));
    let e = quantize_row(GgmlType::Q4K, &x, &mut q[..10], None).unwrap_err();
    assert!(matches!(
        e,
        QuantizeError::Codec(CodecError::WrongByteCount { .. })
    ));
    let e = quantize_row(GgmlType::Q4K, &x, &mut q, Some(&x[..128])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: the importance vector has 128 values for a row of 256"
    );
    let mut q2 = vec![0u8; 2 * GgmlType::Q8_0.type_size()];
    let e = quantize_rows(GgmlType::Q8_0, &x[..96], 64, &mut q2, None).unwrap_err();
    assert!(matches!(
        e,
        QuantizeError::PartialRow {
            n: 96,
            n_per_row: 64
        }
    ));
    assert!(quantize_rows(GgmlType::Q8_0, &x[..64], 32, &mut q2, None).is_ok());
    assert!(quantize_rows(GgmlType::Q8_0, &[], 0, &mut [], None).is_ok());
}

#[test]
fn activation_quantizers_match_their_definitions() {
    use crate::ggml::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
    use bytemuck::Zeroable;
    let mut rng = StdRng::seed_from_u64(4);
    let rows = edge_rows(&mut rng)
        .into_iter()
        .chain([("random", gaussian(&mut rng, N, 1.0))]);
    // on subnormal rows 1/d overflows and ggml's float-to-int casts give 0: nothing to compare
    for (_, x) in rows.filter(|(name, _)| *name != "subnormal") {
        let mut b0 = vec![BlockQ8_0::zeroed(); N / 32];
        let mut b1 = vec![BlockQ8_1::zeroed(); N / 32];
        let mut bk = vec![BlockQ8K::zeroed(); N / 256];
        quantize_row_q8_0(&x, &mut b0).unwrap();
        quantize_row_q8_1(&x, &mut b1).unwrap();
        quantize_row_q8_k(&x, &mut bk).unwrap();
        for ((b0, b1), xs) in b0.iter().zip(&b1).zip(x.chunks(32)) {
            assert_eq!((b0.d, b0.qs), (b1.d, b1.qs), "Q8_1 rounds as Q8_0");
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let sum: i32 = b1.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(b1.s, to_f16(sum as f32 * d), "s uses the unrounded d");
            for (&q, &v) in b0.qs.iter().zip(xs) {
                // exact f64 reference: q = round(x / d) from the unrounded d
                let want = if d == 0.0 {
                    0.0
                } else {
                    (v as f64 / d as f64).round()
                };
                assert!((q as f64 - want).abs() <= 1.0, "{v}: {q} vs {want}");
            }
        }
        for (b, xs) in bk.iter().zip(x.chunks(256)) {
            for (j, s) in b.bsums.iter().enumerate() {
                let sum: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
                assert_eq!(*s as i32, sum);
            }
            for (&q, &v) in b.qs.iter().zip(xs) {
                assert!(
                    (b.d as f64 * q as f64 - v as f64).abs() <= b.d.abs() as f64 * 0.5001 + 1e-30
                );
            }
        }
    }
    let mut b0 = vec![BlockQ8_0::zeroed(); 2];
    assert!(quantize_row_q8_0(&[0.0; 32], &mut b0).is_err());
}

/// The eight-lane affine search is the scalar search run eight times, bit for bit: every grid,
/// on random sub-blocks, flat ones (max ≤ min), all-zero ones, outliers and non-finite values.
#[test]
fn the_eight_lane_affine_search_is_the_scalar_search() {
    use super::search::{
        make_qkx_quants, make_qkx_quants_x8, GRID_IMATRIX, GRID_Q2K, GRID_Q4K, GRID_Q5K,
    };
    let mut rng = StdRng::seed_from_u64(17);
    let grids = [
        (15, GRID_Q4K, 32),
        (31, GRID_Q5K, 32),
        (3, GRID_Q2K, 16),
        (15, GRID_IMATRIX, 32),
    ];
    for case in 0..400 {
        let (nmax, grid, n) = grids[case % grids.len()];
        let mut x = gaussian(&mut rng, 8 * n, 0.02);
        let mut w: Vec<f32> = x
            .iter()
            .map(|v| v.abs() + rng.random_range(0.0..0.01))
            .collect();
        match case % 9 {
            0 => x[..n].fill(0.0),
            1 => x[n..2 * n].fill(0.75),
            2 => x[3 * n + 5] = 40.0,
            3 => x[2 * n..3 * n].iter_mut().for_each(|v| *v = -v.abs() - 1.0),
            4 => x[4 * n + 1] = f32::NAN,
            5 => x[5 * n + 2] = f32::INFINITY,
            6 => w[6 * n..7 * n].fill(0.0),
            7 => x[7 * n..].iter_mut().for_each(|v| *v *= 1e-30),
            _ => {}
        }
        let mut lanes = vec![0u8; 8 * n];
        let fits = make_qkx_quants_x8(nmax, &x, &w, &mut lanes, grid);
        for (k, lane) in fits.iter().enumerate() {
            let r = k * n..(k + 1) * n;
            let mut levels = vec![0u8; n];
            let fit = make_qkx_quants(nmax, &x[r.clone()], &w[r.clone()], &mut levels, grid);
            assert_eq!(
                (fit.scale.to_bits(), fit.min.to_bits()),
                (lane.scale.to_bits(), lane.min.to_bits()),
                "case {case} lane {k}: {fit:?} vs {lane:?}"
            );
            assert_eq!(levels, &lanes[r], "case {case} lane {k}");
        }
    }
}

/// The AVX2 build of the encoders (used where the CPU has it) and the baseline build give the same
/// bytes for every type, with and without an importance matrix, on random and edge-case rows:
/// the golden tests only see the build this machine picks.
#[test]
fn every_instruction_set_build_encodes_the_same_bytes() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut rows = edge_rows(&mut rng);
    for s in [0.02, 1.0, 300.0] {
        rows.push(("gaussian", gaussian(&mut rng, N, s)));
    }
    let mut with_nan = gaussian(&mut rng, N, 0.1);
    with_nan[77] = f32::NAN;
    rows.push(("nan", with_nan));
    let mut with_inf = gaussian(&mut rng, N, 0.1);
    with_inf[200] = f32::NEG_INFINITY;
    rows.push(("inf", with_inf));
    let imatrix: Vec<f32> = (0..N).map(|_| rng.random_range(0.0..3.0)).collect();
    for ty in GgmlType::ALL {
        for (name, x) in &rows {
            for w in [None, Some(&imatrix[..])] {
                let n = ty.row_bytes(N).unwrap();
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                encode_generic(ty, x, &mut a, w).unwrap();
                encode(ty, x, &mut b, w).unwrap();
                assert_eq!(a, b, "{ty} {name} imatrix={}", w.is_some());
            }
        }
    }
}
