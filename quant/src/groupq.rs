//! Group-wise integer weight quantization, the form behind GPTQ, AWQ and compressed-tensors
//! W4A16: each output row of a [rows × cols] weight is cut into groups of input columns, every
//! (group, row) has a scale and an integer zero point, and w ≈ scale · (q − zero) with
//! q in 0..2^bits. [`GroupQuant`] is the unpacked form that every artifact format packs; its
//! dequantization is the reference that packers, loaders and kernels are tested against.

use half::f16;

/// A group-quantized [rows × cols] matrix (rows = output features, as nn.Linear).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupQuant {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    /// Input columns per group (`cols` for one group per row).
    pub group_size: usize,
    /// rows × cols codes, row-major, each below 2^bits.
    pub codes: Vec<u8>,
    /// n_groups × rows (the group-major order GPTQ and AWQ files use).
    pub scales: Vec<f32>,
    /// n_groups × rows integer zero points, at most 2^bits (what a GPTQ v1 file's stored 2^bits − 1
    /// means; the quantizers here stay within 2^bits − 1).
    pub zeros: Vec<u8>,
    /// The group of each input column when it is not `c / group_size` (GPTQ act-order).
    pub g_idx: Option<Vec<u32>>,
}

impl GroupQuant {
    pub fn maxq(&self) -> u32 {
        (1 << self.bits) - 1
    }

    pub fn n_groups(&self) -> usize {
        self.cols.div_ceil(self.group_size.max(1))
    }

    /// The group of input column `c`.
    #[inline]
    pub fn group_of(&self, c: usize) -> usize {
        match &self.g_idx {
            Some(g) => g[c] as usize,
            None => c / self.group_size,
        }
    }

    /// Checks sizes and ranges (files are untrusted): a message naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=8).contains(&self.bits) {
            return Err(format!("{} bits (1 to 8 supported)", self.bits));
        }
        if self.group_size == 0 {
            return Err("group size 0".into());
        }
        let ng = self.n_groups();
        if self.codes.len() != self.rows * self.cols {
            return Err(format!(
                "{} codes for a [{} x {}] matrix",
                self.codes.len(),
                self.rows,
                self.cols
            ));
        }
        if self.scales.len() != ng * self.rows || self.zeros.len() != ng * self.rows {
            return Err(format!(
                "{} scales and {} zeros, expected {} groups x {} rows",
                self.scales.len(),
                self.zeros.len(),
                ng,
                self.rows
            ));
        }
        let maxq = self.maxq();
        if let Some(c) = self.codes.iter().position(|&q| q as u32 > maxq) {
            return Err(format!(
                "code {} at row {}, column {} exceeds {maxq}",
                self.codes[c],
                c / self.cols,
                c % self.cols
            ));
        }
        if let Some(i) = self.zeros.iter().position(|&z| z as u32 > maxq + 1) {
            return Err(format!("zero point {} exceeds {}", self.zeros[i], maxq + 1));
        }
        if let Some(i) = self.scales.iter().position(|s| !s.is_finite()) {
            return Err(format!(
                "scale of group {}, row {} is {}",
                i / self.rows,
                i % self.rows,
                self.scales[i]
            ));
        }
        if let Some(g) = &self.g_idx {
            if g.len() != self.cols {
                return Err(format!(
                    "g_idx has {} entries for {} columns",
                    g.len(),
                    self.cols
                ));
            }
            if let Some(c) = g.iter().position(|&x| x as usize >= ng) {
                return Err(format!("g_idx[{c}] = {} but there are {ng} groups", g[c]));
            }
        }
        Ok(())
    }

    /// Scale and zero of (group `g`, row `r`).
    #[inline]
    pub fn params(&self, g: usize, r: usize) -> (f32, u8) {
        (
            self.scales[g * self.rows + r],
            self.zeros[g * self.rows + r],
        )
    }

    /// Row `r` dequantized: scale · (q − zero), exact in f32 for f16/bf16 scales (an 11-bit
    /// mantissa times an integer of magnitude at most 2^8 needs at most 20 bits).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols);
        let codes = &self.codes[r * self.cols..(r + 1) * self.cols];
        for (c, (o, &q)) in out.iter_mut().zip(codes).enumerate() {
            let (s, z) = self.params(self.group_of(c), r);
            *o = s * (q as f32 - z as f32);
        }
    }

    /// The whole matrix dequantized, rows × cols.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        for (r, row) in w.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        w
    }
}

/// How a group's scale and zero point follow from its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitRule {
    /// GPTQ's quantizer (IST-DASLab quant.py): the range always includes 0. Symmetric: zero at
    /// the middle code 2^(bits−1) and scale 2·max|w|/maxq. Asymmetric: scale (max − min)/maxq,
    /// zero round(−min/scale), kept at least 1 because GPTQ v1 files store zero − 1.
    ///
    /// One deliberate difference from quant.py: a symmetric group without negative weights
    /// still gets the range ±max|w| (quant.py leaves its minimum at 0 there, halving the scale
    /// and clipping the upper half of the group).
    Gptq { sym: bool },
    /// AutoAWQ's pseudo_quantize_tensor with zero points: scale (max − min)/maxq over the
    /// group's own range (clamped at 1e-5), zero clamp(−round(min/scale), 0, maxq).
    Awq,
}

/// The scale and zero point of one group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    pub scale: f32,
    pub zero: u8,
}

/// The smallest positive f16 (a subnormal): scales are never rounded to 0.
const MIN_SCALE: f32 = 5.960_464_5e-8;

/// Rounds a scale to the nearest f16, the precision both GPTQ and AWQ files store, so that the
/// codes are chosen against the scale the artifact will hold.
pub fn f16_scale<T: Real>(s: T) -> f32 {
    s.to_f16().to_f32().max(MIN_SCALE)
}

/// Fits the scale and zero point of one group of weights `w` for `bits`-bit codes.
pub fn fit<T: Real>(w: &[T], bits: u32, rule: FitRule) -> GroupParams {
    let maxq = T::from_f64(((1u32 << bits) - 1) as f64);
    let (zero_t, one) = (T::from_f64(0.0), T::from_f64(1.0));
    let (lo, hi) = w.iter().fold((T::INFINITY, T::NEG_INFINITY), |(a, b), &x| {
        (a.min(x), b.max(x))
    });
    match rule {
        FitRule::Gptq { sym } => {
            let (mut lo, mut hi) = (lo.min(zero_t), hi.max(zero_t));
            if sym {
                hi = hi.max(-lo);
                lo = -hi;
            }
            if lo == zero_t && hi == zero_t {
                (lo, hi) = (-one, one);
            }
            let mut scale = f16_scale((hi - lo) / maxq);
            let zero = if sym {
                (maxq + one) / T::from_f64(2.0)
            } else {
                let mut z = (-lo / T::from_f32(scale)).round_ties_even();
                if z < one {
                    // A group with (almost) no negative weight: put code 1 at 0 and stretch the
                    // remaining codes over the positive range.
                    z = one;
                    scale = f16_scale(hi / (maxq - one));
                }
                z.min(maxq)
            };
            GroupParams {
                scale,
                zero: zero.to_f32() as u8,
            }
        }
        FitRule::Awq => {
            let scale = f16_scale((hi - lo).max(T::from_f64(1e-5)) / maxq);
            let zero = (-(lo / T::from_f32(scale)).round_ties_even())
                .max(zero_t)
                .min(maxq);
            GroupParams {
                scale,
                zero: zero.to_f32() as u8,
            }
        }
    }
}

/// The code of `x`: clamp(round(x / scale) + zero, 0, maxq), rounding half to even as torch does.
#[inline]
pub fn quantize_value<T: Real>(x: T, p: GroupParams, maxq: u32) -> u8 {
    let q = (x / T::from_f32(p.scale)).round_ties_even() + T::from_f32(p.zero as f32);
    q.max(T::from_f64(0.0))
        .min(T::from_f64(maxq as f64))
        .to_f32() as u8
}

/// The value code `q` stands for.
#[inline]
pub fn dequantize_value<T: Real>(q: u8, p: GroupParams) -> T {
    T::from_f32(p.scale) * T::from_f32(q as f32 - p.zero as f32)
}

/// The float types the quantizers run in: f32 in the converters, f64 in the tests that compare
/// them with float64 oracles.
pub trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::SubAssign
    + std::ops::AddAssign
{
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    fn from_f64(x: f64) -> Self;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
    /// Rounded once to the nearest f16 (no detour through f32).
    fn to_f16(self) -> f16;
    fn min(self, o: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn round_ties_even(self) -> Self;
    /// self·a + b, rounded once.
    fn mul_add(self, a: Self, b: Self) -> Self;
}

/// round_ties_even without a library call: on x86-64's baseline (no SSE4.1 `roundss`) the
/// standard one calls rintf, which dominated the quantizers' inner loops. Adding and
/// subtracting 2^(mantissa bits) rounds to an integer, ties to even, in the default rounding
/// mode; at or above that magnitude every float is already an integer (and NaN stays NaN).
macro_rules! round_ties_even_fast {
    ($x:expr, $t:ty, $mant:expr) => {{
        let x: $t = $x;
        let m = (1u64 << $mant) as $t;
        if x.abs() < m {
            ((x.abs() + m) - m).copysign(x)
        } else {
            x
        }
    }};
}

macro_rules! real {
    ($t:ty, $to_f16:path, $mant:expr) => {
        impl Real for $t {
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn to_f16(self) -> f16 {
                $to_f16(self)
            }
            #[inline]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn round_ties_even(self) -> Self {
                round_ties_even_fast!(self, $t, $mant)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
        }
    };
}
real!(f32, f16::from_f32, 23);
real!(f64, f16::from_f64, 52);

/// Round-to-nearest quantization of a [rows × cols] weight: every group fitted by `rule` on its
/// own weights, with no calibration (the `rtn` method of the converters).
pub fn quantize_rtn(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: usize,
    rule: FitRule,
) -> GroupQuant {
    assert_eq!(w.len(), rows * cols);
    assert!(group_size > 0 && cols.is_multiple_of(group_size));
    let ng = cols / group_size;
    let maxq = (1u32 << bits) - 1;
    let mut gq = GroupQuant {
        rows,
        cols,
        bits,
        group_size,
        codes: vec![0; rows * cols],
        scales: vec![0.0; ng * rows],
        zeros: vec![0; ng * rows],
        g_idx: None,
    };
    for r in 0..rows {
        for g in 0..ng {
            let span = r * cols + g * group_size..r * cols + (g + 1) * group_size;
            let p = fit(&w[span.clone()], bits, rule);
            gq.scales[g * rows + r] = p.scale;
            gq.zeros[g * rows + r] = p.zero;
            for (q, &x) in gq.codes[span.clone()].iter_mut().zip(&w[span]) {
                *q = quantize_value(x, p, maxq);
            }
        }
    }
    gq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounding_equals_the_standard_one() {
        let specials = [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -2.5,
            8388607.5,
            8388608.0,
            1e30,
            -0.0,
            f32::MIN_POSITIVE,
        ];
        for x in (0..=u32::MAX)
            .step_by(997)
            .map(f32::from_bits)
            .chain(specials)
        {
            let (got, want) = (Real::round_ties_even(x), x.round_ties_even());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x}"
            );
            let x = x as f64 * 1.000_000_1;
            let (got, want) = (Real::round_ties_even(x), x.round_ties_even());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x}"
            );
        }
    }

    #[test]
    fn gptq_sym_fit_centres_the_zero() {
        let p = fit::<f32>(&[-1.0, 0.5, 0.25, 0.75], 4, FitRule::Gptq { sym: true });
        assert_eq!(p.zero, 8);
        assert_eq!(p.scale, f16_scale(2.0f32 / 15.0));
        // No negative weight: still the symmetric range.
        let p = fit::<f32>(&[0.0, 0.5, 1.5], 4, FitRule::Gptq { sym: true });
        assert_eq!(p.scale, f16_scale(3.0f32 / 15.0));
        assert_eq!(quantize_value(1.5, p, 15), 15);
    }

    #[test]
    fn gptq_asym_fit_keeps_the_zero_at_least_one() {
        let p = fit::<f32>(&[-0.3, 1.2], 4, FitRule::Gptq { sym: false });
        assert_eq!(p.scale, f16_scale(1.5f32 / 15.0));
        assert_eq!(p.zero as f32, (0.3 / p.scale).round_ties_even());
        let p = fit::<f32>(&[0.1, 0.4, 1.4], 4, FitRule::Gptq { sym: false });
        assert_eq!(p.zero, 1);
        assert_eq!(p.scale, f16_scale(1.4f32 / 14.0));
        assert!((dequantize_value::<f32>(quantize_value(1.4f32, p, 15), p) - 1.4).abs() < 1e-3);
        // All zero: quant.py's [-1, 1] range.
        let p = fit::<f32>(&[0.0; 4], 3, FitRule::Gptq { sym: false });
        assert_eq!(p.scale, f16_scale(2.0f32 / 7.0));
    }

    #[test]
    fn awq_fit_uses_the_groups_own_range() {
        let p = fit::<f32>(&[0.5, 1.0, 2.0], 4, FitRule::Awq);
        assert_eq!(p.scale, f16_scale(1.5f32 / 15.0));
        assert_eq!(p.zero, 0);
        let p = fit::<f32>(&[-2.0, 1.0], 4, FitRule::Awq);
        assert_eq!(p.zero as f32, (2.0 / p.scale).round_ties_even());
        let p = fit::<f32>(&[0.25; 8], 4, FitRule::Awq);
        assert_eq!(p.scale, f16_scale(1e-5f32 / 15.0));
    }

    #[test]
    fn rounding_is_half_to_even() {
        let p = GroupParams {
            scale: 1.0,
            zero: 8,
        };
        assert_eq!(quantize_value(0.5, p, 15), 8);
        assert_eq!(quantize_value(1.5, p, 15), 10);
        assert_eq!(quantize_value(-0.5, p, 15), 8);
        assert_eq!(quantize_value(100.0, p, 15), 15);
        assert_eq!(quantize_value(-100.0, p, 15), 0);
    }

    #[test]
    fn rtn_round_trips_within_half_a_step_and_validates() {
        let (rows, cols) = (3, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        for rule in [FitRule::Gptq { sym: false }, FitRule::Awq] {
            let gq = quantize_rtn(&w, rows, cols, 4, 32, rule);
            gq.validate().unwrap();
            let back = gq.dequantize();
            for (i, (a, b)) in w.iter().zip(&back).enumerate() {
                let (s, _) = gq.params((i % cols) / 32, i / cols);
                // Half a step inside the range; the rounded zero point can move the grid by
                // another half step at its ends.
                assert!((a - b).abs() <= s * 1.001, "{rule:?} {i}: {a} vs {b}");
            }
        }
        let mut bad = quantize_rtn(&w, rows, cols, 4, 32, FitRule::Awq);
        bad.codes[70] = 16;
        assert!(bad.validate().unwrap_err().contains("row 1, column 6"));
    }
}
