//! Activation quantization: f32 rows to the 8-bit block formats that the integer dot products
//! read (Q8_0, Q8_1, Q8_K), with the rounding of ggml's reference quantizers so that a dot product
//! here equals llama.cpp's on the same inputs.
//!
//! A Q8_0 or Q8_1 row is ggml's blocks followed by f32 copies of every block's d (and then of
//! every s): the kernels multiply by these once per block and token, where an f16 conversion cost
//! about as much as the block's integer product. The copies are exact (f16 → f32). A Q8_0 row
//! then holds each block's Σq as an i32: the interleaved kernels (`cpu::interleave`) multiply
//! unsigned weight bytes u = q + offset and subtract offset·Σq, exactly.

use bytemuck::Zeroable;
use half::f16;
use quant::ggml::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use quant::ggml::{GgmlType, QK_K};

use super::features::Isa;

const QK8: usize = 32;

/// The form activations take for a product with weights of a given type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// Plain f32 (float weights).
    F32,
    Q8_0,
    /// Q8_0 plus d·Σq per block, for weights with an additive minimum (Q4_1, Q5_1).
    Q8_1,
    /// 256-element blocks with an f32 scale and 16-element partial sums (K-quants, IQ4_XS).
    Q8K,
}

impl ActFormat {
    /// The activation format ggml pairs with weights of type `ty` (its `vec_dot_type`), or None
    /// for activation-only types.
    pub fn for_weight(ty: GgmlType) -> Option<ActFormat> {
        use GgmlType::*;
        Some(match ty {
            F32 | F16 | BF16 => ActFormat::F32,
            Q4_0 | Q5_0 | Q8_0 | IQ4NL => ActFormat::Q8_0,
            Q4_1 | Q5_1 => ActFormat::Q8_1,
            Q2K | Q3K | Q4K | Q5K | Q6K | IQ4XS => ActFormat::Q8K,
            Q8_1 | Q8K => return None,
        })
    }

    pub fn block_size(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 | ActFormat::Q8_1 => QK8,
            ActFormat::Q8K => QK_K,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            ActFormat::F32 => 4,
            ActFormat::Q8_0 => std::mem::size_of::<BlockQ8_0>(),
            ActFormat::Q8_1 => std::mem::size_of::<BlockQ8_1>(),
            ActFormat::Q8K => std::mem::size_of::<BlockQ8K>(),
        }
    }

    /// Bytes of the ggml blocks of a row of `cols` elements (a whole number of blocks).
    pub fn blocks_bytes(self, cols: usize) -> usize {
        assert!(
            cols.is_multiple_of(self.block_size()),
            "row is not whole blocks"
        );
        cols / self.block_size() * self.block_bytes()
    }

    /// Where a row's f32 scale copies start (Q8_0, Q8_1): after the blocks, 4-byte aligned.
    pub fn scales_offset(self, cols: usize) -> usize {
        self.blocks_bytes(cols).next_multiple_of(4)
    }

    /// Where a Q8_0 row's i32 block sums Σq start.
    pub fn sums_offset(self, cols: usize) -> usize {
        self.scales_offset(cols) + 4 * (cols / self.block_size())
    }

    /// Bytes of one quantized row: the blocks and, for Q8_0/Q8_1, the f32 scale copies (and for
    /// Q8_0 the block sums).
    pub fn row_bytes(self, cols: usize) -> usize {
        let nb = cols / self.block_size().max(1);
        match self {
            ActFormat::Q8_0 => self.scales_offset(cols) + 8 * nb,
            ActFormat::Q8_1 => self.scales_offset(cols) + 8 * nb,
            ActFormat::F32 | ActFormat::Q8K => self.blocks_bytes(cols),
        }
    }

    /// Quantizes one row `x` into `out` (`row_bytes(x.len())` bytes, 4-byte aligned) with the
    /// kernels of `isa`.
    pub fn quantize_row(self, isa: Isa, x: &[f32], out: &mut [u8]) {
        let n = x.len();
        assert_eq!(out.len(), self.row_bytes(n));
        let (blocks, tables) = out.split_at_mut(self.blocks_bytes(n));
        match self {
            ActFormat::F32 => blocks.copy_from_slice(bytemuck::cast_slice(x)),
            ActFormat::Q8K => quantize_row_q8_k(isa, x, bytemuck::cast_slice_mut(blocks)),
            ActFormat::Q8_0 => {
                let b: &mut [BlockQ8_0] = bytemuck::cast_slice_mut(blocks);
                quantize_row_q8_0(isa, x, b);
                let (d, sums) = tables[self.scales_offset(n) - self.blocks_bytes(n)..]
                    .split_at_mut(4 * b.len());
                fill_f32(d, b.iter().map(|b| b.d.to_f32()));
                for (o, b) in sums.chunks_exact_mut(4).zip(b.iter()) {
                    let sum: i32 = b.qs.iter().map(|q| *q as i32).sum();
                    o.copy_from_slice(&sum.to_le_bytes());
                }
            }
            ActFormat::Q8_1 => {
                let b: &mut [BlockQ8_1] = bytemuck::cast_slice_mut(blocks);
                quantize_row_q8_1(isa, x, b);
                let (d, s) = tables[self.scales_offset(n) - self.blocks_bytes(n)..]
                    .split_at_mut(4 * b.len());
                fill_f32(d, b.iter().map(|b| b.d.to_f32()));
                fill_f32(s, b.iter().map(|b| b.s.to_f32()));
            }
        }
    }
}

fn fill_f32(out: &mut [u8], v: impl Iterator<Item = f32>) {
    for (o, v) in out.chunks_exact_mut(4).zip(v) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// `n_rows` activation rows in one [`ActFormat`], in a 4-byte aligned buffer so that each row
/// can be viewed as blocks.
pub struct QuantizedRows {
    format: ActFormat,
    row_bytes: usize,
    n_rows: usize,
    words: Vec<u32>,
}

impl QuantizedRows {
    /// Quantizes the `x.len() / cols` rows of `x` with the kernels of `isa`, in parallel when
    /// there are many.
    pub fn new(isa: Isa, format: ActFormat, x: &[f32], cols: usize) -> QuantizedRows {
        assert!(cols > 0 && x.len().is_multiple_of(cols));
        let row_bytes = format.row_bytes(cols);
        // Rows are whole multiples of 4 bytes, so every row starts aligned for its blocks.
        let n_rows = x.len() / cols;
        let mut words = SPARE.take();
        words.clear();
        words.resize((n_rows * row_bytes).div_ceil(4), 0);
        let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..n_rows * row_bytes];
        // Small batches are not worth waking the thread pool for.
        if n_rows >= 8 {
            crate::parallel::for_each_chunk_mut(bytes, 4 * row_bytes, |i, out| {
                for (j, out) in out.chunks_mut(row_bytes).enumerate() {
                    let t = 4 * i + j;
                    format.quantize_row(isa, &x[t * cols..(t + 1) * cols], out);
                }
            });
        } else {
            for (out, row) in bytes.chunks_mut(row_bytes).zip(x.chunks(cols)) {
                format.quantize_row(isa, row, out);
            }
        }
        QuantizedRows {
            format,
            row_bytes,
            n_rows,
            words,
        }
    }

    pub fn format(&self) -> ActFormat {
        self.format
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// All rows, back to back.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.n_rows * self.row_bytes]
    }

    pub fn row(&self, t: usize) -> &[u8] {
        &self.bytes()[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

impl Drop for QuantizedRows {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        SPARE.with(|spare| {
            let old = spare.take();
            spare.set(if old.capacity() > words.capacity() {
                old
            } else {
                words
            });
        });
    }
}

thread_local! {
    /// The buffer of this thread's last dropped `QuantizedRows`, reused by the next: a prompt
    /// batch's quantized activations are hundreds of kilobytes, quantized once per matmul.
    static SPARE: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Q8_0: d = max|x|/127 per 32 values, q = round-half-away(x/d).
pub fn quantize_row_q8_0(isa: Isa, x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), y.len() * QK8);
    if x86_simd(isa) {
        // SAFETY: the CPU runs AVX2/FMA/F16C code (x86_simd); lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        return unsafe { x86::quantize_q8_0_avx2(x, y) };
    }
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK8)) {
        let (d, _) = q8_block_scalar(x, &mut b.qs);
        b.d = f16::from_f32(d);
    }
}

/// Q8_1: as Q8_0, plus s = d·Σq (rounded to f16 like d).
pub fn quantize_row_q8_1(isa: Isa, x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), y.len() * QK8);
    if x86_simd(isa) {
        // SAFETY: the CPU runs AVX2/FMA/F16C code (x86_simd); lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        return unsafe { x86::quantize_q8_1_avx2(x, y) };
    }
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK8)) {
        let (d, sum) = q8_block_scalar(x, &mut b.qs);
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
    }
}

/// Q8_K: d = −max/127 with max the signed value of largest magnitude (first one on ties),
/// q = round-half-even(x/d) clamped to 127, and the sum of each 16 quants.
pub fn quantize_row_q8_k(isa: Isa, x: &[f32], y: &mut [BlockQ8K]) {
    assert_eq!(x.len(), y.len() * QK_K);
    if x86_simd(isa) {
        // SAFETY: the CPU runs AVX2/FMA/F16C code (x86_simd); lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        return unsafe { x86::quantize_q8_k_avx2(x, y) };
    }
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let Some(iscale) = q8k_inverse_scale(x) else {
            *b = BlockQ8K::zeroed();
            continue;
        };
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = q.iter().map(|v| *v as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Whether to use the AVX2 quantizers: they serve both x86 levels (AVX-512 would not speed up
/// this small step). Other levels use the portable code, which compilers vectorize well enough
/// for a step that costs 1/rows of the matmul it feeds.
fn x86_simd(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && matches!(isa, Isa::Avx2 | Isa::Avx512) && isa.is_available()
}

/// One Q8_0/Q8_1 block: returns (d, Σq).
fn q8_block_scalar(x: &[f32], qs: &mut [i8; QK8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0;
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
        sum += *q as i32;
    }
    (d, sum)
}

/// −127/max for a Q8_K block, or None when the block is all zeros.
fn q8k_inverse_scale(x: &[f32]) -> Option<f32> {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax != 0.0).then(|| -127.0 / max)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Horizontal maximum of 8 lanes.
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
        _mm_cvtsi128_si32(s)
    }

    #[inline(always)]
    unsafe fn abs_ps(v: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
    }

    /// C's roundf (half away from zero), exactly: truncate, then step away from zero when the
    /// dropped fraction (computed exactly) is at least one half.
    #[inline(always)]
    unsafe fn round_half_away(v: __m256) -> __m256 {
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = abs_ps(_mm256_sub_ps(v, t));
        let step = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
        let up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
        _mm256_add_ps(t, _mm256_and_ps(up, step))
    }

    /// Packs 32 integral floats (in four vectors, element order) to 32 i8 with saturation.
    #[inline(always)]
    unsafe fn pack_i8(v: [__m256i; 4]) -> __m256i {
        // packs works within 128-bit lanes; the final permute restores element order.
        let a = _mm256_packs_epi32(v[0], v[1]);
        let b = _mm256_packs_epi32(v[2], v[3]);
        let p = _mm256_packs_epi16(a, b);
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// One Q8_0/Q8_1 block: writes the quants, returns (d, Σq).
    #[inline(always)]
    unsafe fn q8_block(x: *const f32, qs: *mut i8) -> (f32, i32) {
        let v = [
            _mm256_loadu_ps(x),
            _mm256_loadu_ps(x.add(8)),
            _mm256_loadu_ps(x.add(16)),
            _mm256_loadu_ps(x.add(24)),
        ];
        let m = _mm256_max_ps(
            _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
            _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
        );
        let d = hmax(m) / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let mut q = [_mm256_setzero_si256(); 4];
        for (q, v) in q.iter_mut().zip(v) {
            *q = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v, id)));
        }
        _mm256_storeu_si256(qs as *mut __m256i, pack_i8(q));
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        (d, hsum_i32(s))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_0_avx2(x: &[f32], y: &mut [BlockQ8_0]) {
        for (i, b) in y.iter_mut().enumerate() {
            let (d, _) = q8_block(x.as_ptr().add(QK8 * i), b.qs.as_mut_ptr());
            b.d = f16::from_f32(d);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_1_avx2(x: &[f32], y: &mut [BlockQ8_1]) {
        for (i, b) in y.iter_mut().enumerate() {
            let (d, sum) = q8_block(x.as_ptr().add(QK8 * i), b.qs.as_mut_ptr());
            b.d = f16::from_f32(d);
            b.s = f16::from_f32(sum as f32 * d);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_k_avx2(x: &[f32], y: &mut [BlockQ8K]) {
        for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
            let p = x.as_ptr();
            let mut m = _mm256_setzero_ps();
            for k in 0..QK_K / 8 {
                m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(p.add(8 * k))));
            }
            let amax = hmax(m);
            if amax == 0.0 {
                *b = BlockQ8K::zeroed();
                continue;
            }
            // The sign of the first element of largest magnitude decides the scale's sign.
            let max = *x.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
            let iscale = -127.0 / max;
            let is = _mm256_set1_ps(iscale);
            for g in 0..QK_K / 32 {
                let mut q = [_mm256_setzero_si256(); 4];
                for (k, q) in q.iter_mut().enumerate() {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(32 * g + 8 * k)), is);
                    *q = _mm256_cvtps_epi32(_mm256_round_ps(
                        v,
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                    ));
                }
                _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * g) as *mut __m256i, pack_i8(q));
                b.bsums[2 * g] = hsum_i32(_mm256_add_epi32(q[0], q[1])) as i16;
                b.bsums[2 * g + 1] = hsum_i32(_mm256_add_epi32(q[2], q[3])) as i16;
            }
            b.d = 1.0 / iscale;
        }
    }
}
