//! The 8-bit encoders against float64 references written independently here: every one of the
//! 65,536 f16 (and bf16) bit patterns through quant's E4M3 encoder (via f32), compared with a
//! brute-force nearest-value search over the format's 256 codes; int8 weight rounding over every
//! bf16 weight at several scales, compared with an exact nearest-multiple search.

use half::{bf16, f16};
use quant::fp8::{e4m3_from_f32, e4m3_from_f64, e4m3_to_f32};
use quant::hf::compressed_tensors::ScaleDtype;
use quant::int8::quantize_weight;

/// The value of an E4M3 code from the format's definition (sign, 4-bit exponent with bias 7,
/// 3-bit mantissa, subnormals at exponent 0, S.1111.111 NaN), in f64.
fn e4m3_value(code: u8) -> Option<f64> {
    let (s, e, m) = (
        (code >> 7) as i32,
        ((code >> 3) & 15) as i32,
        (code & 7) as f64,
    );
    if e == 15 && m == 7.0 {
        return None;
    }
    let mag = if e == 0 {
        m / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f64.powi(e - 7)
    };
    Some(if s == 1 { -mag } else { mag })
}

/// Round to nearest (ties to the even code) over all finite magnitudes, saturating at 448; NaN
/// → NaN. None stands for NaN.
fn e4m3_reference(x: f64) -> Option<u8> {
    if x.is_nan() {
        return None;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    if a >= 448.0 {
        return Some(sign | 0x7E);
    }
    let mut best = 0u8;
    let mut best_d = f64::INFINITY;
    for c in 0..=0x7Eu8 {
        let d = (a - e4m3_value(c).unwrap()).abs();
        if d < best_d || (d == best_d && c % 2 == 0) {
            best = c;
            best_d = d;
        }
    }
    Some(sign | best)
}

fn check_all(name: &str, to_f32: impl Fn(u16) -> f32) {
    let mut mismatches = Vec::new();
    for bits in 0..=u16::MAX {
        let x = to_f32(bits);
        // Both encoders: the f32 one (activations) and the f64 one (weight quotients).
        for got in [e4m3_from_f32(x), e4m3_from_f64(x as f64)] {
            let ok = match e4m3_reference(x as f64) {
                None => got & 0x7F == 0x7F,
                Some(want) => got == want,
            };
            if !ok {
                mismatches.push((bits, x, got));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{name}: {} encodings of 65536 patterns differ from the float64 reference, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

#[test]
fn e4m3_encoder_matches_float64_reference_on_every_f16() {
    check_all("f16", |b| f16::from_bits(b).to_f32());
}

#[test]
fn e4m3_encoder_matches_float64_reference_on_every_bf16() {
    check_all("bf16", |b| bf16::from_bits(b).to_f32());
}

#[test]
fn e4m3_decode_table_matches_the_definition() {
    for c in 0..=255u8 {
        match e4m3_value(c) {
            None => assert!(e4m3_to_f32(c).is_nan()),
            Some(v) => {
                assert_eq!(e4m3_to_f32(c) as f64, v, "code {c:#04x}");
                assert_eq!(e4m3_to_f32(c).is_sign_negative(), c & 0x80 != 0);
            }
        }
    }
}

/// The integer k in [−128, 127] minimizing |w − k·s| exactly (w and s are bf16 values, so k·s and
/// w − k·s are exact in f64), ties to even k.
fn int8_reference(w: f64, s: f64) -> i8 {
    let k0 = (w / s).floor().clamp(-1000.0, 1000.0) as i64;
    let mut best = (f64::INFINITY, 0i64);
    for k in (k0 - 2..=k0 + 2).map(|k| k.clamp(-128, 127)) {
        let d = (w - k as f64 * s).abs();
        if d < best.0 || (d == best.0 && k % 2 == 0) {
            best = (d, k);
        }
    }
    best.1 as i8
}

#[test]
fn int8_weight_rounding_matches_exact_reference_on_every_bf16() {
    // Scales as compressed-tensors makes them (bf16 amax/127.5 for a few amax), plus ones that
    // put many weights exactly halfway.
    let scales: Vec<f32> = [0.37f32, 1.0, 3e-3, 250.0]
        .iter()
        .map(|a| bf16::from_f32(a / 127.5).to_f32())
        .chain([1.0, 0.5, 2f32.powi(-10)])
        .collect();
    for s in scales {
        let mut bad = 0;
        for bits in 0..=u16::MAX {
            let w = bf16::from_bits(bits).to_f32();
            if !w.is_finite() {
                continue;
            }
            // PyTorch's bf16 division: the correctly rounded f32 quotient (from f64), rounded
            // to bf16; then the nearest integer. In f32 the quotient is rounded once.
            // (Clamped first, as compressed-tensors does: a quotient past f32's range is ±∞.)
            let q32 = ((w as f64 / s as f64) as f32).clamp(-1000.0, 1000.0);
            let in_bf16 = int8_reference(bf16::from_f32(q32).to_f64(), 1.0);
            let in_f32 = int8_reference(q32 as f64, 1.0);
            if quantize_weight(w, s, ScaleDtype::BF16) != in_bf16
                || quantize_weight(w, s, ScaleDtype::F32) != in_f32
            {
                bad += 1;
            }
        }
        assert_eq!(bad, 0, "scale {s}: {bad} bf16 weights round differently");
    }
}

#[test]
fn e4m3_encoders_match_float64_reference_on_random_f32() {
    // f16/bf16 leave f32's low mantissa bits zero; random bit patterns exercise them too.
    use rand::{Rng, SeedableRng};
    let mut r = rand::rngs::StdRng::seed_from_u64(8);
    for _ in 0..400_000 {
        // Exponents around E4M3's range (2⁻¹² .. 2¹⁰) and the rest.
        let bits: u32 = if r.random_bool(0.8) {
            let e = r.random_range(115u32..138);
            (r.random::<u32>() & 0x807F_FFFF) | (e << 23)
        } else {
            r.random()
        };
        let x = f32::from_bits(bits);
        let want = e4m3_reference(x as f64);
        for got in [e4m3_from_f32(x), e4m3_from_f64(x as f64)] {
            match want {
                None => assert_eq!(got & 0x7F, 0x7F, "{x:e}"),
                Some(w) => assert_eq!(got, w, "{x:e} ({bits:#010x})"),
            }
        }
    }
}
