use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use runtime::loader::safetensors_dir::SafetensorsDir;
use runtime::model::synthetic::{f32_matrix, SyntheticSpec};
use runtime::model::Observer;

use super::*;
use crate::stats::collect;

fn samples(vocab: usize) -> Vec<Vec<u32>> {
    let mut r = rand::rngs::StdRng::seed_from_u64(11);
    (0..4)
        .map(|_| (0..32).map(|_| r.random_range(0..vocab as u32)).collect())
        .collect()
}

/// A synthetic model with outlier channels in its norms (what SmoothQuant is for), stored as
/// `dtype` says.
fn model(dtype: &str) -> Model {
    let mut m = SyntheticSpec::default().build(5);
    for l in &mut m.layers {
        Arc::make_mut(&mut l.attn_norm)[3] = 25.0;
        Arc::make_mut(&mut l.ffn_norm)[7] = -15.0;
    }
    m.config.torch_dtype = Some(dtype.into());
    m
}

fn opts(scheme: Scheme, smoothquant: Option<f64>) -> CompressedOptions {
    CompressedOptions {
        scheme,
        smoothquant,
        max_shard_bytes: 1 << 30,
    }
}

fn logits(m: &Model) -> Vec<f32> {
    let toks = [3u32, 17, 42, 5, 88, 1, 60, 9];
    m.forward(&toks, &mut m.new_cache(), 0)
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n).sqrt()
}

#[test]
fn smoothing_preserves_the_function_even_with_rounded_norms() {
    let base = model("float32");
    let stats = collect(&base, &samples(96), |_| {});
    for dtype in [ScaleDtype::F32, ScaleDtype::BF16] {
        let mut smoothed = model("float32");
        let mut moved = 0f64;
        for i in 0..base.layers.len() {
            let mut block = base.layers[i].clone();
            let mut w: BTreeMap<LinearKind, Vec<f32>> = LinearKind::ALL
                .iter()
                .map(|&k| (k, hf_linear_weight(&base, &base.layers[i], k)))
                .collect();
            let before = w.clone();
            smooth_block(i, &mut block, &mut w, &stats, 0.5, dtype, &mut vec![]).unwrap();
            for (k, v) in &w {
                let lin = &base.layers[i].linear(*k).w;
                block.linear_mut(*k).w = f32_matrix(v, lin.rows(), lin.cols());
                moved = moved.max(rel_err(v, &before[k]));
            }
            if dtype == ScaleDtype::BF16 {
                let is_bf16 = |g: &f32| half::bf16::from_f32(*g).to_f32() == *g;
                assert!(block.attn_norm.iter().all(is_bf16));
                assert!(w[&LinearKind::Q].iter().all(is_bf16));
            }
            smoothed.layers[i] = block;
        }
        assert!(
            moved > 0.1,
            "smoothing should move the weights (moved {moved})"
        );
        // In bf16 the smoothed weights are stored rounded too (as llm-compressor holds them):
        // the function moves by about bf16's precision; in f32 only by float rounding.
        let bound = if dtype == ScaleDtype::BF16 {
            1e-2
        } else {
            1e-5
        };
        let e = rel_err(&logits(&smoothed), &logits(&base));
        assert!(
            e < bound,
            "{dtype:?}: smoothing changed the function by {e}"
        );
    }
}

#[test]
fn every_scheme_loads_back_close_to_the_model() {
    let base = model("bfloat16");
    let stats = collect(&base, &samples(96), |_| {});
    let want = logits(&base);
    let dir = tempfile::tempdir().unwrap();
    // Bounds at about twice the errors measured on this model (FP8 static is the coarsest: one
    // activation scale per tensor against outlier channels; SmoothQuant halves W8A8's error).
    for (scheme, sq, bound, format) in [
        (
            Scheme::Fp8Dynamic,
            None,
            0.12,
            "fp8 e4m3 (per-channel weights, per-token dynamic",
        ),
        (
            Scheme::Fp8Static,
            None,
            0.45,
            "fp8 e4m3 (per-tensor weights, per-tensor static",
        ),
        (
            Scheme::Fp8Block,
            None,
            0.22,
            "fp8 e4m3 (128x128 blocks weights, per-token group 128",
        ),
        (Scheme::W8A8, Some(0.5), 0.04, "int8 W8A8"),
        (Scheme::W8A8, None, 0.09, "int8 W8A8"),
        (Scheme::W8A16, None, 0.03, "int8 W8A16"),
    ] {
        let out = dir.path().join(format!("{scheme:?}-{sq:?}"));
        let done = convert(
            &base,
            None,
            &out,
            &opts(scheme, sq),
            Some(&stats),
            &ModelCard::default(),
            |_| {},
        )
        .unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            cfg["quantization_config"],
            scheme.quantization_config(&["lm_head"])
        );
        assert_eq!(cfg["torch_dtype"], "bfloat16");
        let back = runtime::load(&done.out).unwrap();
        for l in &back.layers {
            for k in LinearKind::ALL {
                let f = l.linear(k).w.format();
                assert!(f.starts_with(format), "{scheme:?} {k:?}: {f}");
            }
        }
        let e = rel_err(&logits(&back), &want);
        eprintln!("{scheme:?} smoothquant {sq:?}: relative logit error {e:.4}");
        assert!(e < bound, "{scheme:?} {sq:?}: relative logit error {e}");
    }
}

#[test]
fn static_scales_come_from_calibration_and_fused_linears_share_them() {
    let base = model("bfloat16");
    let stats = collect(&base, &samples(96), |_| {});
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("static");
    convert(
        &base,
        None,
        &out,
        &opts(Scheme::Fp8Static, None),
        Some(&stats),
        &ModelCard::default(),
        |_| {},
    )
    .unwrap();
    let st = SafetensorsDir::open(&out).unwrap();
    let scalar = |name: &str| st.vector_f32(name, 1).unwrap()[0];
    for i in 0..base.layers.len() {
        for group in FUSED {
            let p = |k: LinearKind, t: &str| format!("model.layers.{i}.{}.{t}", k.hf_name());
            let amax = stats.get(i, group[0]).unwrap().amax().unwrap();
            let want_input = half::bf16::from_f32(amax / 448.0).to_f32();
            let amax_w = group
                .iter()
                .map(|k| {
                    hf_linear_weight(&base, &base.layers[i], *k)
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()))
                })
                .fold(0f32, f32::max);
            let want_weight = half::bf16::from_f32(amax_w / 448.0).to_f32();
            for &k in group {
                assert_eq!(scalar(&p(k, "input_scale")), want_input, "layer {i} {k:?}");
                assert_eq!(
                    scalar(&p(k, "weight_scale")),
                    want_weight,
                    "layer {i} {k:?}"
                );
            }
        }
    }
}

#[test]
fn bad_statistics_weights_and_smoothing_fail_naming_the_layer_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fails = |m: &Model, o: CompressedOptions, stats: Option<&ActivationStats>, needle: &str| {
        let e = convert(m, None, &out, &o, stats, &ModelCard::default(), |_| {}).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "output left behind"
        );
    };

    let base = model("bfloat16");
    let mut stats = collect(&base, &samples(96), |_| {});
    let mut x = vec![0.5f32; 64];
    x[9] = f32::NAN;
    stats.linear_input(1, LinearKind::Q, &x, 1);
    fails(
        &base,
        opts(Scheme::Fp8Static, None),
        Some(&stats),
        "layer 1 attention input (q/k/v): 1 NaN/infinite",
    );
    fails(
        &base,
        opts(Scheme::W8A8, Some(0.5)),
        Some(&stats),
        "layer 1 attention input",
    );
    fails(
        &base,
        opts(Scheme::W8A8, Some(0.5)),
        None,
        "needs calibration statistics",
    );
    fails(&base, opts(Scheme::W8A8, Some(1.5)), None, "outside 0..=1");

    let mut nan = model("bfloat16");
    let down = hf_linear_weight(&nan, &nan.layers[1], LinearKind::Down);
    let mut bad = down.clone();
    bad[130] = f32::INFINITY;
    nan.layers[1].down.w = f32_matrix(&bad, 64, 128);
    fails(
        &nan,
        opts(Scheme::Fp8Dynamic, None),
        None,
        "layer 1 mlp.down_proj: weight [1, 2] is inf",
    );

    // An activation range of 1e30 in one channel asks γ/s of ~1e-15: zero in f16.
    let f16 = model("float16");
    let mut stats = collect(&f16, &samples(96), |_| {});
    let mut x = vec![0.0f32; 64];
    x[5] = 1e30;
    stats.linear_input(0, LinearKind::Q, &x, 1);
    fails(
        &f16,
        opts(Scheme::W8A8, Some(0.5)),
        Some(&stats),
        "SmoothQuant, layer 0 input_layernorm: 1 channels",
    );
}

/// Converts the synthetic model to `scheme` in `dir/name` and returns the folder.
fn converted(dir: &Path, name: &str, scheme: Scheme) -> PathBuf {
    let base = model("bfloat16");
    let stats = collect(&base, &samples(96), |_| {});
    let out = dir.join(name);
    convert(
        &base,
        None,
        &out,
        &opts(scheme, None),
        Some(&stats),
        &ModelCard::default(),
        |_| {},
    )
    .unwrap();
    out
}

/// Rewrites config.json's quantization_config with `edit`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v["quantization_config"]);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn load_error(dir: &Path) -> String {
    match runtime::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn corrupt_or_unsupported_folders_fail_to_load_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let g0 = "config_groups.group_0";
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: [(Scheme, &str, Edit, &str); 6] = [
        (
            Scheme::Fp8Dynamic,
            "strategy",
            Box::new(|q| q["config_groups"]["group_0"]["weights"]["strategy"] = "diagonal".into()),
            "weights",
        ),
        (
            Scheme::Fp8Dynamic,
            "format",
            Box::new(|q| q["config_groups"]["group_0"]["format"] = "marlin-24".into()),
            "format",
        ),
        (
            Scheme::W8A8,
            "static int8",
            Box::new(|q| {
                q["config_groups"]["group_0"]["input_activations"]["dynamic"] = false.into()
            }),
            "input_activations",
        ),
        (
            Scheme::W8A16,
            "16-bit packs",
            Box::new(|q| q["config_groups"]["group_0"]["weights"]["num_bits"] = 16.into()),
            "weights.num_bits",
        ),
        (
            Scheme::W8A8,
            "asymmetric",
            Box::new(|q| q["config_groups"]["group_0"]["weights"]["symmetric"] = false.into()),
            "weights.symmetric",
        ),
        (
            Scheme::Fp8Dynamic,
            "bad regex",
            Box::new(|q| q["ignore"] = serde_json::json!(["re:("])),
            "quantization_config.ignore[0]",
        ),
    ];
    for (i, (scheme, what, edit, field)) in cases.into_iter().enumerate() {
        let dir = converted(tmp.path(), &format!("c{i}"), scheme);
        edit_config(&dir, edit);
        let e = load_error(&dir);
        assert!(
            e.contains("config.json") && e.contains(field),
            "{what}: {e}"
        );
        if field != "quantization_config.ignore[0]" {
            assert!(e.contains(g0), "{what}: {e}");
        }
    }

    // A NaN code in an FP8 weight, and a missing scale, name the tensor.
    let dir = converted(tmp.path(), "nan", Scheme::Fp8Dynamic);
    let st = SafetensorsDir::open(&dir).unwrap();
    let e = st.get("model.layers.1.mlp.up_proj.weight").unwrap().clone();
    let file = st.file_path(&e).to_owned();
    drop(st);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[e.start + 77] = 0xFF;
    std::fs::write(&file, &bytes).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("NaN code"),
        "{err}"
    );

    let dir = converted(tmp.path(), "scale", Scheme::Fp8Static);
    edit_config(&dir, |q| {
        q["config_groups"]["group_0"]["weights"]["strategy"] = "channel".into()
    });
    let err = load_error(&dir);
    assert!(
        err.contains("weight_scale") && err.contains("shape"),
        "{err}"
    );
}
