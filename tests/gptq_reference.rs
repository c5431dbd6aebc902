//! quant::gptq against a float64 NumPy implementation of the published algorithm
//! (tests/oracle/gptq_ref.py, IST-DASLab gptq.py semantics) on random weights and Hessians:
//! identical codes, scales, zero points and g_idx for every option (bits, groups, act-order,
//! static groups, symmetric or not, dead columns, several lazy-update blocks).

mod common;

use quant::gptq::{quantize, Factor, GptqConfig, Hessian};
use quant::groupq::{quantize_rtn, GroupQuant};
use rand::{Rng, SeedableRng};

fn normal(rng: &mut impl Rng) -> f32 {
    // Box-Muller: the tests need heavy-ish tails, not a particular generator.
    let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

struct Case {
    cfg: GptqConfig,
    w: Vec<f32>,
    h: Hessian,
    rows: usize,
    cols: usize,
}

fn case(seed: u64, rows: usize, cols: usize, tokens: usize, cfg: GptqConfig) -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * normal(&mut rng)).collect();
    // Input features of very different magnitudes (what act-order is for), correlated through
    // a shared component, and one feature that is always 0 (a dead column).
    let col_scale: Vec<f32> = (0..cols).map(|_| rng.random_range(0.1f32..3.0)).collect();
    let mut x = vec![0f32; tokens * cols];
    for t in 0..tokens {
        let shared = normal(&mut rng);
        for c in 0..cols {
            x[t * cols + c] = if c == 5 {
                0.0
            } else {
                col_scale[c] * (normal(&mut rng) + 0.5 * shared)
            };
        }
    }
    let mut h = Hessian::new(cols);
    h.add_rows(&x);
    Case {
        cfg,
        w,
        h,
        rows,
        cols,
    }
}

fn cases() -> Vec<Case> {
    let c = GptqConfig::default;
    vec![
        case(
            1,
            24,
            256,
            400,
            GptqConfig {
                group_size: 64,
                ..c()
            },
        ),
        case(
            2,
            16,
            256,
            300,
            GptqConfig {
                bits: 3,
                group_size: 32,
                sym: false,
                act_order: true,
                ..c()
            },
        ),
        case(
            3,
            20,
            192,
            300,
            GptqConfig {
                group_size: 64,
                act_order: true,
                static_groups: true,
                ..c()
            },
        ),
        case(
            4,
            8,
            160,
            200,
            GptqConfig {
                bits: 2,
                group_size: 160,
                block_size: 64,
                ..c()
            },
        ),
        case(
            5,
            12,
            256,
            300,
            GptqConfig {
                bits: 8,
                group_size: 128,
                act_order: true,
                sym: false,
                damp: 0.1,
                ..c()
            },
        ),
        case(
            6,
            16,
            128,
            100,
            GptqConfig {
                group_size: 32,
                sym: false,
                static_groups: true,
                ..c()
            },
        ),
    ]
}

fn oracle(cases: &[Case]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            // As f64, so that JSON carries each f32 weight exactly.
            let w: Vec<f64> = c.w.iter().map(|v| *v as f64).collect();
            let w: Vec<&[f64]> = w.chunks(c.cols).collect();
            let h = c.h.matrix();
            let h: Vec<&[f64]> = h.chunks(c.cols).collect();
            serde_json::json!({
                "w": w, "h": h, "bits": c.cfg.bits, "group_size": c.cfg.group_size,
                "sym": c.cfg.sym, "act_order": c.cfg.act_order,
                "static_groups": c.cfg.static_groups, "damp": c.cfg.damp,
                "block_size": c.cfg.block_size,
            })
        })
        .collect();
    let input = dir.path().join("cases.json");
    let output = dir.path().join("out.json");
    std::fs::write(&input, serde_json::to_string(&json).unwrap()).unwrap();
    let o = common::python()
        .arg(common::oracle("gptq_ref.py"))
        .args([&input, &output])
        .output()
        .unwrap();
    assert!(o.status.success(), "oracle: {}", common::stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(output).unwrap()).unwrap()
}

fn ints(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| match r.as_array() {
            Some(a) => a.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
            None => vec![r.as_f64().unwrap()],
        })
        .collect()
}

#[test]
fn gptq_matches_the_float64_reference() {
    let cases = cases();
    let want = oracle(&cases);
    for (i, (c, want)) in cases.iter().zip(&want).enumerate() {
        let f = Factor::new(&c.h, &c.cfg).unwrap();
        let got = quantize::<f64>(&c.w, c.rows, c.cols, &f, &c.cfg)
            .unwrap()
            .quant;
        got.validate().unwrap();
        let codes: Vec<f64> = got.codes.iter().map(|q| *q as f64).collect();
        let wc = ints(&want["codes"]);
        let diff = codes.iter().zip(&wc).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "case {i} ({:?}): {diff} codes differ", c.cfg);
        // Through f32: serde_json's default float parsing can be one f64 ulp off.
        let want_scales: Vec<f32> = ints(&want["scales"]).iter().map(|s| *s as f32).collect();
        assert_eq!(got.scales, want_scales, "case {i}: scales");
        let zeros: Vec<f64> = got.zeros.iter().map(|z| *z as f64).collect();
        assert_eq!(zeros, ints(&want["zeros"]), "case {i}: zeros");
        match (&got.g_idx, want["g_idx"].is_null()) {
            (None, true) => {}
            (Some(g), false) => {
                let g: Vec<f64> = g.iter().map(|x| *x as f64).collect();
                assert_eq!(g, ints(&want["g_idx"]), "case {i}: g_idx");
            }
            (g, _) => panic!("case {i}: g_idx {g:?} vs {}", want["g_idx"]),
        }
    }
}

/// ‖X·(W − Q)ᵀ‖² through the Hessian: Σ_r Δ_r·H·Δ_rᵀ.
fn output_error(w: &[f32], q: &GroupQuant, h: &Hessian) -> f64 {
    let hm = h.matrix();
    let n = q.cols;
    let deq = q.dequantize();
    (0..q.rows)
        .map(|r| {
            let d: Vec<f64> = (0..n)
                .map(|c| (w[r * n + c] - deq[r * n + c]) as f64)
                .collect();
            (0..n)
                .map(|i| d[i] * (0..n).map(|j| hm[i * n + j] * d[j]).sum::<f64>())
                .sum::<f64>()
        })
        .sum()
}

#[test]
fn f32_solver_agrees_with_f64_and_beats_round_to_nearest() {
    for c in cases() {
        let f = Factor::new(&c.h, &c.cfg).unwrap();
        let a = quantize::<f32>(&c.w, c.rows, c.cols, &f, &c.cfg).unwrap();
        let b = quantize::<f64>(&c.w, c.rows, c.cols, &f, &c.cfg).unwrap();
        let same = a
            .quant
            .codes
            .iter()
            .zip(&b.quant.codes)
            .filter(|(x, y)| x == y)
            .count();
        assert!(
            same as f64 >= 0.99 * a.quant.codes.len() as f64,
            "{:?}: only {same} of {} codes agree",
            c.cfg,
            a.quant.codes.len()
        );
        assert!(
            (a.loss - b.loss).abs() <= 0.01 * b.loss,
            "{} vs {}",
            a.loss,
            b.loss
        );
        let rtn = quantize_rtn(
            &c.w,
            c.rows,
            c.cols,
            c.cfg.bits,
            c.cfg.group_size,
            c.cfg.fit_rule(),
        );
        let (e_gptq, e_rtn) = (
            output_error(&c.w, &a.quant, &c.h),
            output_error(&c.w, &rtn, &c.h),
        );
        assert!(
            e_gptq < 0.8 * e_rtn,
            "{:?}: GPTQ output error {e_gptq} vs RTN {e_rtn}",
            c.cfg
        );
    }
}
