//! Signed int8 × int8 dot products (W8A8 matmul) and per-token int8 activation quantization as
//! vLLM computes it (quant::int8::quantize_token_dynamic is the reference; results are
//! bit-identical at every level).
//!
//! x86 uses the sign trick: |w| as unsigned bytes times sign(w)·x as signed bytes, so one
//! unsigned × signed product (`vpdpbusd` with AVX-512 VNNI, `vpmaddubsw` + `vpmaddwd` with AVX2)
//! serves signed weights. It needs activations in [−127, 127] (negating −128 wraps), which the
//! per-token quantizer guarantees (|x·127/amax| ≤ 127); pair sums then stay below 2¹⁵
//! (2·128·127), so AVX2's saturating `vpmaddubsw` is exact.

use super::features::Isa;

/// Activation rows per kernel call: the weight row's |w| and sign are computed once for them.
pub const NT: usize = 4;

/// Σ w[i]·x_t[i] for one weight row and `nt` (1..=NT) activation rows at `x`, `stride` bytes
/// apart, each `w.len()` long.
///
/// Safety contract: the CPU supports the kernel's level; `x` covers the `nt` rows.
type TileFn = unsafe fn(w: &[i8], x: &[i8], stride: usize, nt: usize) -> [i32; NT];

/// Quantizes one token: writes q and returns the scale.
type QuantFn = unsafe fn(x: &[f32], q: &mut [i8]) -> f32;

/// The int8 kernels of one instruction-set level.
#[derive(Clone, Copy)]
pub struct Int8Kernels {
    isa: Isa,
    tile: TileFn,
    quant: QuantFn,
}

impl std::fmt::Debug for Int8Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Kernels({:?})", self.isa)
    }
}

impl Int8Kernels {
    /// The kernels of level `isa` (a level without its own kernels uses the next narrower
    /// level's), or None when this CPU cannot run it.
    pub fn new(isa: Isa) -> Option<Int8Kernels> {
        if !isa.is_available() {
            return None;
        }
        let (tile, quant): (TileFn, QuantFn) = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (x86::tile_avx512, x86::quantize_avx2),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (x86::tile_avx2, x86::quantize_avx2),
            _ => (tile_scalar, quantize_scalar),
        };
        Some(Int8Kernels { isa, tile, quant })
    }

    pub fn best() -> Int8Kernels {
        Int8Kernels::new(Isa::best()).expect("the best level is available")
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Dots of `w` with `nt` activation rows `stride` apart in `x`; activations must lie in
    /// [−127, 127].
    pub fn dot_tile(&self, w: &[i8], x: &[i8], stride: usize, nt: usize) -> [i32; NT] {
        assert!((1..=NT).contains(&nt), "1..={NT} activation rows");
        assert!(stride >= w.len() && x.len() >= (nt - 1) * stride + w.len());
        assert!(
            (0..nt).all(|t| x[t * stride..t * stride + w.len()]
                .iter()
                .all(|&v| v != -128)),
            "activations must lie in [-127, 127]"
        );
        // SAFETY: the level was checked available at construction; lengths were checked above.
        unsafe { (self.tile)(w, x, stride, nt) }
    }

    /// [`dot_tile`](Self::dot_tile) without the checks, for the matmul loop.
    ///
    /// # Safety
    /// `1 <= nt <= NT`, `x` covers `nt` rows of `w.len()` values `stride` apart, in [−127, 127].
    #[inline]
    pub(crate) unsafe fn dot_tile_unchecked(
        &self,
        w: &[i8],
        x: &[i8],
        stride: usize,
        nt: usize,
    ) -> [i32; NT] {
        (self.tile)(w, x, stride, nt)
    }

    /// vLLM's dynamic per-token quantization of one token; returns its scale.
    pub fn quantize_token(&self, x: &[f32], q: &mut [i8]) -> f32 {
        assert_eq!(x.len(), q.len());
        // SAFETY: the level was checked available at construction; lengths match.
        unsafe { (self.quant)(x, q) }
    }
}

unsafe fn tile_scalar(w: &[i8], x: &[i8], stride: usize, nt: usize) -> [i32; NT] {
    let mut out = [0i32; NT];
    for (t, o) in out.iter_mut().enumerate().take(nt) {
        let xt = &x[t * stride..t * stride + w.len()];
        *o = w.iter().zip(xt).map(|(&a, &b)| a as i32 * b as i32).sum();
    }
    out
}

unsafe fn quantize_scalar(x: &[f32], q: &mut [i8]) -> f32 {
    quant::int8::quantize_token_dynamic(x, q)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::NT;

    #[target_feature(enable = "avx2")]
    unsafe fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2_n<const N: usize>(w: &[i8], x: &[i8], stride: usize) -> [i32; NT] {
        let n = w.len();
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); N];
        let mut i = 0;
        while i + 32 <= n {
            let wv = _mm256_loadu_si256(pw.add(i) as *const __m256i);
            let aw = _mm256_sign_epi8(wv, wv);
            for (t, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_si256(px.add(t * stride + i) as *const __m256i);
                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv));
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, ones));
            }
            i += 32;
        }
        let mut out = [0i32; NT];
        for (t, o) in out.iter_mut().enumerate().take(N) {
            let tail: i32 = (i..n).map(|j| w[j] as i32 * x[t * stride + j] as i32).sum();
            *o = hsum_epi32(acc[t]) + tail;
        }
        out
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_avx512_n<const N: usize>(w: &[i8], x: &[i8], stride: usize) -> [i32; NT] {
        let n = w.len();
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_si512(); N];
        let mut i = 0;
        while i < n {
            // The last step loads a partial vector through a mask; the zeros add nothing.
            let m: __mmask64 = if n - i >= 64 {
                !0
            } else {
                (1u64 << (n - i)) - 1
            };
            let wv = _mm512_maskz_loadu_epi8(m, pw.add(i));
            let aw = _mm512_abs_epi8(wv);
            let neg = _mm512_movepi8_mask(wv);
            for (t, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_epi8(m, px.add(t * stride + i));
                let sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
                *acc = _mm512_dpbusd_epi32(*acc, aw, sx);
            }
            i += 64;
        }
        let mut out = [0i32; NT];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_epi32(a);
        }
        out
    }

    pub(super) unsafe fn tile_avx2(w: &[i8], x: &[i8], stride: usize, nt: usize) -> [i32; NT] {
        match nt {
            1 => tile_avx2_n::<1>(w, x, stride),
            2 => tile_avx2_n::<2>(w, x, stride),
            3 => tile_avx2_n::<3>(w, x, stride),
            _ => tile_avx2_n::<4>(w, x, stride),
        }
    }

    pub(super) unsafe fn tile_avx512(w: &[i8], x: &[i8], stride: usize, nt: usize) -> [i32; NT] {
        match nt {
            1 => tile_avx512_n::<1>(w, x, stride),
            2 => tile_avx512_n::<2>(w, x, stride),
            3 => tile_avx512_n::<3>(w, x, stride),
            _ => tile_avx512_n::<4>(w, x, stride),
        }
    }

    /// vLLM's per-token int8 quantization, 32 values per step: amax with `vmaxps` (whose second
    /// operand wins over a NaN, like fmaxf), x·(127/amax) converted with the default
    /// round-to-nearest-even mode, NaN zeroed first, then saturating packs to bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_avx2(x: &[f32], q: &mut [i8]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let mut m = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(p.add(i)), abs_mask), m);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let amax = lanes
            .iter()
            .chain(&x[i..])
            .fold(0f32, |a, v| a.max(v.abs()));
        let inv = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        let vinv = _mm256_set1_ps(inv);
        let to_i32 = |v: __m256| {
            let y = _mm256_mul_ps(v, vinv);
            _mm256_cvtps_epi32(_mm256_and_ps(y, _mm256_cmp_ps(y, y, _CMP_ORD_Q)))
        };
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut j = 0;
        while j + 32 <= n {
            let a = to_i32(_mm256_loadu_ps(p.add(j)));
            let b = to_i32(_mm256_loadu_ps(p.add(j + 8)));
            let c = to_i32(_mm256_loadu_ps(p.add(j + 16)));
            let d = to_i32(_mm256_loadu_ps(p.add(j + 24)));
            // packs work per 128-bit lane; the permute restores element order.
            let bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(q.as_mut_ptr().add(j) as *mut __m256i, bytes);
            j += 32;
        }
        for k in j..n {
            q[k] = quant::int8::round_saturate(x[k] * inv);
        }
        amax / 127.0
    }
}
