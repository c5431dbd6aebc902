//! Group-quantized integer weights (GPTQ, AWQ, compressed-tensors W4A16/W8A16) times f32
//! activations. vLLM's W4A16 kernels (Marlin, exllama, the AWQ GEMM) dequantize the weights
//! inside the kernel and keep the activations in 16-bit floats; this keeps them in f32, so the
//! runtime computes what vLLM serves, without the error an 8-bit activation path would add.
//!
//! Layout, repacked once at load from quant's [`GroupQuant`]: columns reordered so that every
//! group is contiguous (act-order's g_idx becomes a gather of the activations per call); per
//! row, codes in 32-column chunks, each 16 bytes of nibbles (byte j = code j | code j+16 << 4)
//! for up to 4 bits or 32 bytes for up to 8; per (row, group) the scale s and s·zero. A row's
//! product is Σ_g s_g·Σ_c q_c·x_c − Σ_g (s_g·z_g)·Σ_c x_c, the second sum taken once per token.

use quant::groupq::GroupQuant;
use rayon::prelude::*;

use crate::cpu::vec_dot::MAX_NT;
use crate::cpu::Isa;
use crate::matrix::{check_matmul_args, Matrix, OutPtr};

/// Columns per storage chunk; groups and rows are whole chunks.
pub const CHUNK: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GroupQuantError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "group size {group} and {cols} input features must be multiples of {CHUNK} for the int kernels"
    )]
    Geometry { group: usize, cols: usize },
    #[error("g_idx groups hold {found} columns where the group size is {group}")]
    UnevenGroups { found: usize, group: usize },
}

/// One weight row's Σ_g s_g·Σ_c q_c·x_c for `nt` activation rows `x_stride` floats apart.
///
/// Safety contract: the CPU supports the kernel's level; `codes` holds the row's chunks, `scales`
/// its groups, and `x` covers `nt` rows of `cols` = chunks·32 floats.
type RowFn = unsafe fn(
    codes: &[u8],
    scales: &[f32],
    chunks_per_group: usize,
    x: &[f32],
    x_stride: usize,
    nt: usize,
) -> [f32; MAX_NT];

pub struct GroupQuantMatrix {
    rows: usize,
    cols: usize,
    bits: u32,
    group: usize,
    /// Position i holds original column perm[i]; None when groups are already contiguous.
    perm: Option<Vec<u32>>,
    codes: Vec<u8>,
    row_bytes: usize,
    /// rows × groups.
    scales: Vec<f32>,
    /// rows × groups: scale · zero.
    mins: Vec<f32>,
    /// rows × groups.
    zeros: Vec<u8>,
    kernel: RowFn,
    isa: Isa,
}

/// Bytes of one 32-column chunk.
fn chunk_bytes(bits: u32) -> usize {
    if bits <= 4 {
        CHUNK / 2
    } else {
        CHUNK
    }
}

impl GroupQuantMatrix {
    /// Repacks `q` for the widest kernels this CPU runs.
    pub fn new(q: &GroupQuant) -> Result<GroupQuantMatrix, GroupQuantError> {
        Self::with_isa(q, Isa::best())
    }

    /// Repacks `q` for the kernels of level `isa` (tests compare levels); the scalar kernel
    /// where this CPU cannot run `isa`.
    pub fn with_isa(q: &GroupQuant, isa: Isa) -> Result<GroupQuantMatrix, GroupQuantError> {
        q.validate().map_err(GroupQuantError::Invalid)?;
        let (rows, cols, g) = (q.rows, q.cols, q.group_size);
        if !g.is_multiple_of(CHUNK) || !cols.is_multiple_of(g) {
            return Err(GroupQuantError::Geometry { group: g, cols });
        }
        let ng = cols / g;
        let perm = match &q.g_idx {
            None => None,
            Some(g_idx) => {
                let mut order: Vec<u32> = (0..cols as u32).collect();
                order.sort_by_key(|&c| g_idx[c as usize]);
                let mut counts = vec![0usize; ng];
                for &x in g_idx {
                    counts[x as usize] += 1;
                }
                if let Some(&found) = counts.iter().find(|&&n| n != g) {
                    return Err(GroupQuantError::UnevenGroups { found, group: g });
                }
                let identity = order.iter().enumerate().all(|(i, &c)| i == c as usize);
                (!identity).then_some(order)
            }
        };
        let col_at = |i: usize| perm.as_ref().map_or(i, |p| p[i] as usize);
        let cb = chunk_bytes(q.bits);
        let row_bytes = cols / CHUNK * cb;
        let mut codes = vec![0u8; rows * row_bytes];
        for (r, out) in codes.chunks_exact_mut(row_bytes).enumerate() {
            let src = &q.codes[r * cols..(r + 1) * cols];
            for (k, chunk) in out.chunks_exact_mut(cb).enumerate() {
                let base = k * CHUNK;
                if q.bits <= 4 {
                    for (j, b) in chunk.iter_mut().enumerate() {
                        *b = src[col_at(base + j)] | (src[col_at(base + j + 16)] << 4);
                    }
                } else {
                    for (j, b) in chunk.iter_mut().enumerate() {
                        *b = src[col_at(base + j)];
                    }
                }
            }
        }
        let (mut scales, mut mins, mut zeros) = (
            vec![0f32; rows * ng],
            vec![0f32; rows * ng],
            vec![0u8; rows * ng],
        );
        for r in 0..rows {
            for gi in 0..ng {
                let (s, z) = q.params(gi, r);
                scales[r * ng + gi] = s;
                mins[r * ng + gi] = s * z as f32;
                zeros[r * ng + gi] = z;
            }
        }
        let (kernel, isa) = row_kernel(q.bits, isa);
        Ok(GroupQuantMatrix {
            rows,
            cols,
            bits: q.bits,
            group: g,
            perm,
            codes,
            row_bytes,
            scales,
            mins,
            zeros,
            kernel,
            isa,
        })
    }

    /// The instruction-set level of the kernel `matmul` uses.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn groups(&self) -> usize {
        self.cols / self.group
    }
}

/// The kernel for `bits` at `isa` (or the narrowest level below it this CPU runs).
fn row_kernel(bits: u32, isa: Isa) -> (RowFn, Isa) {
    let wide = bits > 4;
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && Isa::Avx512.is_available() {
            return (
                if wide {
                    x86::row8_avx512
                } else {
                    x86::row4_avx512
                },
                Isa::Avx512,
            );
        }
        if matches!(isa, Isa::Avx512 | Isa::Avx2) && Isa::Avx2.is_available() {
            return (
                if wide { x86::row8_avx2 } else { x86::row4_avx2 },
                Isa::Avx2,
            );
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if isa == Isa::Neon && Isa::Neon.is_available() {
            return (if wide { neon::row8 } else { neon::row4 }, Isa::Neon);
        }
    }
    let _ = isa;
    (if wide { scalar::row8 } else { scalar::row4 }, Isa::Scalar)
}

/// Activations prepared for one product: permuted into the matrix's column order when it has
/// one, and each token's sum over every group.
struct Acts<'a> {
    x: std::borrow::Cow<'a, [f32]>,
    /// n_tok × groups.
    sums: Vec<f32>,
}

impl GroupQuantMatrix {
    fn prepare<'a>(&self, x: &'a [f32], n_tok: usize) -> Acts<'a> {
        let cols = self.cols;
        let x: std::borrow::Cow<[f32]> = match &self.perm {
            None => x.into(),
            Some(p) => {
                let mut v = vec![0f32; x.len()];
                for (o, row) in v.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
                    for (o, &c) in o.iter_mut().zip(p) {
                        *o = row[c as usize];
                    }
                }
                v.into()
            }
        };
        let ng = self.groups();
        let mut sums = Vec::with_capacity(n_tok * ng);
        for row in x.chunks_exact(cols) {
            sums.extend(row.chunks_exact(self.group).map(|g| g.iter().sum::<f32>()));
        }
        Acts { x, sums }
    }
}

/// Work below this many weight-bytes × tokens runs on the calling thread (waking the pool costs
/// more than it saves on small decode products).
const SERIAL_WORK: usize = 256 << 10;
/// Rows per parallel task: a few KB of codes that stay in L1 while 4-token slices stream past.
const TASK_ROWS: usize = 16;

impl Matrix for GroupQuantMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        check_matmul_args(self, x, n_tok, y);
        let acts = self.prepare(x, n_tok);
        let (cols, ng, rows) = (self.cols, self.groups(), self.rows);
        let cpg = self.group / CHUNK;
        let out = OutPtr(y.as_mut_ptr());
        let run = |rb: usize| {
            let r_end = ((rb + 1) * TASK_ROWS).min(rows);
            for t in (0..n_tok).step_by(MAX_NT) {
                let nt = MAX_NT.min(n_tok - t);
                let xt = &acts.x[t * cols..];
                for r in rb * TASK_ROWS..r_end {
                    let codes = &self.codes[r * self.row_bytes..(r + 1) * self.row_bytes];
                    let scales = &self.scales[r * ng..(r + 1) * ng];
                    // SAFETY: the kernel's level was checked available when it was picked; the
                    // row holds cols/32 chunks and ng groups; xt covers nt rows of cols floats.
                    let v = unsafe { (self.kernel)(codes, scales, cpg, xt, cols, nt) };
                    let mins = &self.mins[r * ng..(r + 1) * ng];
                    for (j, v) in v.iter().take(nt).enumerate() {
                        let sums = &acts.sums[(t + j) * ng..(t + j + 1) * ng];
                        let corr: f32 = mins.iter().zip(sums).map(|(m, s)| m * s).sum();
                        // SAFETY: (t+j)·rows + r < n_tok·rows; tasks own disjoint rows.
                        unsafe { out.write((t + j) * rows + r, v - corr) };
                    }
                }
            }
        };
        let blocks = rows.div_ceil(TASK_ROWS);
        if self.codes.len() * n_tok <= SERIAL_WORK {
            (0..blocks).for_each(run);
        } else {
            (0..blocks).into_par_iter().for_each(run);
        }
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols);
        let ng = self.groups();
        let codes = &self.codes[r * self.row_bytes..(r + 1) * self.row_bytes];
        let cb = chunk_bytes(self.bits);
        for i in 0..self.cols {
            let (k, j) = (i / CHUNK, i % CHUNK);
            let q = if self.bits <= 4 {
                let b = codes[k * cb + j % 16];
                if j < 16 {
                    b & 15
                } else {
                    b >> 4
                }
            } else {
                codes[k * cb + j]
            };
            let gi = i / self.group;
            let (s, z) = (self.scales[r * ng + gi], self.zeros[r * ng + gi]);
            let c = self.perm.as_ref().map_or(i, |p| p[i] as usize);
            out[c] = s * (q as f32 - z as f32);
        }
    }

    fn format(&self) -> String {
        format!(
            "int{} g{}{}",
            self.bits,
            self.group,
            if self.perm.is_some() {
                " act-order"
            } else {
                ""
            }
        )
    }

    fn storage_bytes(&self) -> usize {
        self.codes.len() + 4 * (self.scales.len() + self.mins.len()) + self.zeros.len()
    }
}

mod scalar {
    use super::{CHUNK, MAX_NT};

    #[inline(always)]
    fn row<const WIDE: bool>(
        codes: &[u8],
        scales: &[f32],
        cpg: usize,
        x: &[f32],
        x_stride: usize,
        nt: usize,
    ) -> [f32; MAX_NT] {
        let mut out = [0f32; MAX_NT];
        let cb = if WIDE { CHUNK } else { CHUNK / 2 };
        let mut w = [0f32; CHUNK];
        for (k, chunk) in codes.chunks_exact(cb).enumerate() {
            let s = scales[k / cpg];
            if WIDE {
                for (w, b) in w.iter_mut().zip(chunk) {
                    *w = s * *b as f32;
                }
            } else {
                for (j, b) in chunk.iter().enumerate() {
                    w[j] = s * (b & 15) as f32;
                    w[j + 16] = s * (b >> 4) as f32;
                }
            }
            for (t, o) in out.iter_mut().enumerate().take(nt) {
                let xs = &x[t * x_stride + k * CHUNK..][..CHUNK];
                *o += w.iter().zip(xs).map(|(a, b)| a * b).sum::<f32>();
            }
        }
        out
    }

    pub(super) unsafe fn row4(
        c: &[u8],
        s: &[f32],
        cpg: usize,
        x: &[f32],
        xs: usize,
        nt: usize,
    ) -> [f32; MAX_NT] {
        row::<false>(c, s, cpg, x, xs, nt)
    }

    pub(super) unsafe fn row8(
        c: &[u8],
        s: &[f32],
        cpg: usize,
        x: &[f32],
        xs: usize,
        nt: usize,
    ) -> [f32; MAX_NT] {
        row::<true>(c, s, cpg, x, xs, nt)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHUNK, MAX_NT};

    /// Sums of 8 lanes.
    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// AVX2: 8 codes per vector; a 4-bit chunk is two 8-byte loads, each giving columns j..j+8
    /// (low nibbles) and j+16..j+24 (high nibbles).
    #[inline(always)]
    unsafe fn row_avx2<const WIDE: bool, const NT: usize>(
        codes: &[u8],
        scales: &[f32],
        cpg: usize,
        x: &[f32],
        x_stride: usize,
    ) -> [f32; MAX_NT] {
        let mut acc = [_mm256_setzero_ps(); NT];
        let cb = if WIDE { CHUNK } else { CHUNK / 2 };
        let chunks = codes.len() / cb;
        let (pc, px) = (codes.as_ptr(), x.as_ptr());
        let mask = _mm256_set1_epi32(15);
        for k in 0..chunks {
            let s = _mm256_set1_ps(*scales.get_unchecked(k / cpg));
            let c = pc.add(k * cb);
            let xk = px.add(k * CHUNK);
            let mut w = [_mm256_setzero_ps(); 4];
            if WIDE {
                for (h, w) in w.iter_mut().enumerate() {
                    let b = _mm_loadl_epi64(c.add(8 * h) as *const __m128i);
                    *w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), s);
                }
            } else {
                for h in 0..2 {
                    let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(c.add(8 * h) as *const __m128i));
                    let lo = _mm256_and_si256(b, mask);
                    let hi = _mm256_srli_epi32(b, 4);
                    w[h] = _mm256_mul_ps(_mm256_cvtepi32_ps(lo), s);
                    w[h + 2] = _mm256_mul_ps(_mm256_cvtepi32_ps(hi), s);
                }
            }
            for (t, a) in acc.iter_mut().enumerate() {
                let xt = xk.add(t * x_stride);
                for (v, w) in w.iter().enumerate() {
                    *a = _mm256_fmadd_ps(*w, _mm256_loadu_ps(xt.add(8 * v)), *a);
                }
            }
        }
        let mut out = [0f32; MAX_NT];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum256(a);
        }
        out
    }

    /// AVX-512: 16 codes per vector; a 4-bit chunk is one 16-byte load.
    #[inline(always)]
    unsafe fn row_avx512<const WIDE: bool, const NT: usize>(
        codes: &[u8],
        scales: &[f32],
        cpg: usize,
        x: &[f32],
        x_stride: usize,
    ) -> [f32; MAX_NT] {
        let mut acc = [_mm512_setzero_ps(); NT];
        let cb = if WIDE { CHUNK } else { CHUNK / 2 };
        let chunks = codes.len() / cb;
        let (pc, px) = (codes.as_ptr(), x.as_ptr());
        let mask = _mm512_set1_epi32(15);
        for k in 0..chunks {
            let s = _mm512_set1_ps(*scales.get_unchecked(k / cpg));
            let c = pc.add(k * cb);
            let xk = px.add(k * CHUNK);
            let (w0, w1);
            if WIDE {
                let b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(c as *const __m128i));
                let b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(c.add(16) as *const __m128i));
                w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(b0), s);
                w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(b1), s);
            } else {
                let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(c as *const __m128i));
                w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b, mask)), s);
                w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)), s);
            }
            for (t, a) in acc.iter_mut().enumerate() {
                let xt = xk.add(t * x_stride);
                *a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xt), *a);
                *a = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xt.add(16)), *a);
            }
        }
        let mut out = [0f32; MAX_NT];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
        out
    }

    macro_rules! entries {
        ($features:literal; $($name:ident => $body:ident::<$wide:literal>;)*) => {$(
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                c: &[u8],
                s: &[f32],
                cpg: usize,
                x: &[f32],
                xs: usize,
                nt: usize,
            ) -> [f32; MAX_NT] {
                match nt {
                    1 => $body::<$wide, 1>(c, s, cpg, x, xs),
                    2 => $body::<$wide, 2>(c, s, cpg, x, xs),
                    3 => $body::<$wide, 3>(c, s, cpg, x, xs),
                    _ => $body::<$wide, 4>(c, s, cpg, x, xs),
                }
            }
        )*};
    }

    entries! {"avx2,fma";
        row4_avx2 => row_avx2::<false>;
        row8_avx2 => row_avx2::<true>;
    }
    entries! {"avx2,fma,avx512f,avx512bw";
        row4_avx512 => row_avx512::<false>;
        row8_avx512 => row_avx512::<true>;
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::{CHUNK, MAX_NT};

    /// Four f32x4 of 16 bytes' low (or high) nibbles, or of the bytes themselves.
    #[inline(always)]
    unsafe fn widen(b: uint8x16_t, s: float32x4_t) -> [float32x4_t; 4] {
        let lo = vmovl_u8(vget_low_u8(b));
        let hi = vmovl_u8(vget_high_u8(b));
        let f = |v: uint32x4_t| vmulq_f32(vcvtq_f32_u32(v), s);
        [
            f(vmovl_u16(vget_low_u16(lo))),
            f(vmovl_u16(vget_high_u16(lo))),
            f(vmovl_u16(vget_low_u16(hi))),
            f(vmovl_u16(vget_high_u16(hi))),
        ]
    }

    #[inline(always)]
    unsafe fn row<const WIDE: bool, const NT: usize>(
        codes: &[u8],
        scales: &[f32],
        cpg: usize,
        x: &[f32],
        x_stride: usize,
    ) -> [f32; MAX_NT] {
        let mut acc = [vdupq_n_f32(0.0); NT];
        let cb = if WIDE { CHUNK } else { CHUNK / 2 };
        let chunks = codes.len() / cb;
        let (pc, px) = (codes.as_ptr(), x.as_ptr());
        for k in 0..chunks {
            let s = vdupq_n_f32(*scales.get_unchecked(k / cpg));
            let c = pc.add(k * cb);
            let (a, b) = if WIDE {
                (widen(vld1q_u8(c), s), widen(vld1q_u8(c.add(16)), s))
            } else {
                let v = vld1q_u8(c);
                (
                    widen(vandq_u8(v, vdupq_n_u8(15)), s),
                    widen(vshrq_n_u8(v, 4), s),
                )
            };
            let w = [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]];
            let xk = px.add(k * CHUNK);
            for (t, acc) in acc.iter_mut().enumerate() {
                let xt = xk.add(t * x_stride);
                for (v, w) in w.iter().enumerate() {
                    *acc = vfmaq_f32(*acc, *w, vld1q_f32(xt.add(4 * v)));
                }
            }
        }
        let mut out = [0f32; MAX_NT];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = vaddvq_f32(a);
        }
        out
    }

    macro_rules! entries {
        ($($name:ident => $wide:literal;)*) => {$(
            #[target_feature(enable = "neon")]
            pub(super) unsafe fn $name(
                c: &[u8],
                s: &[f32],
                cpg: usize,
                x: &[f32],
                xs: usize,
                nt: usize,
            ) -> [f32; MAX_NT] {
                match nt {
                    1 => row::<$wide, 1>(c, s, cpg, x, xs),
                    2 => row::<$wide, 2>(c, s, cpg, x, xs),
                    3 => row::<$wide, 3>(c, s, cpg, x, xs),
                    _ => row::<$wide, 4>(c, s, cpg, x, xs),
                }
            }
        )*};
    }

    entries! {
        row4 => false;
        row8 => true;
    }
}
