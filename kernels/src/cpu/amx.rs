//! Intel AMX (Sapphire Rapids and later): eight 1 KB tile registers and TDPBF16PS, which adds
//! a 16×32 by 32×16 bf16 product into 16×16 f32 sums, about eight times the AVX-512 FMA rate.
//! The calibration pipeline's large GEMMs and Gram matrices run on it.
//!
//! Rust has no stable AMX intrinsics, so each instruction is one `asm!` block naming its tile
//! registers; the compiler never allocates tile registers, so their contents persist from one
//! block to the next within a thread. Linux hands a process the 8 KB of tile state only when it
//! asks (arch_prctl), which [`detect`] does once.
//!
//! Operand layouts (both built by this module):
//! - A, row-major bf16 with rows of a multiple of 32 values: a tile is 16 rows × 32 values.
//! - B, "panels": for 16 output columns at a time, one 1 KB tile per 32 values of the shared
//!   dimension, holding for pair q and column j the two consecutive values 2q, 2q+1 of that
//!   column as one u32 (low half first), which is the pair layout TDPBF16PS reads.

/// Values of the shared dimension per tile.
pub const K: usize = 32;
/// Rows and columns of a result tile.
pub const T: usize = 16;
/// u32 words in one B tile.
const TILE_WORDS: usize = T * K / 2;

/// Whether this CPU has AMX tiles and bf16 products and the OS granted the tile state.
pub fn detect() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        if std::env::var("QUANTIZE_AMX").is_ok_and(|v| v == "0") {
            return false;
        }
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // Leaf 7 is read only where leaf 0 says it exists.
        if __cpuid(0).eax < 7 {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let amx_bf16 = leaf7.edx & (1 << 22) != 0;
        let amx_tile = leaf7.edx & (1 << 24) != 0;
        if !(amx_bf16 && amx_tile) {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall with integer arguments; failure is reported, not UB.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Test support: the product paths this CPU can run, the f32 fallback (false) always and the
/// tiles (true) where [`detect`] found them.
#[cfg(test)]
pub(crate) fn paths_to_test() -> &'static [bool] {
    if super::features().amx_bf16 {
        &[false, true]
    } else {
        &[false]
    }
}

/// Rounds to bf16, nearest even, as AVX-512 BF16 and the tiles do: NaN stays a quiet NaN and
/// subnormal inputs become zero (of their sign).
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    let b = if x.is_subnormal() {
        x.to_bits() & 0x8000_0000
    } else {
        x.to_bits()
    };
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if x.is_nan() {
        (b >> 16) as u16 | 0x40
    } else {
        rounded
    }
}

/// Rounds every value of `x` to bf16 as [`bf16_bits`] does, in place.
pub fn round_to_bf16(x: &mut [f32]) {
    for v in x {
        *v = f32::from_bits((bf16_bits(*v) as u32) << 16);
    }
}

/// `dst[i]` = [`bf16_bits`]`(src[i])`, 32 at a time with AVX-512 BF16 where the CPU has it
/// (every AMX CPU does).
pub fn convert(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if super::features().avx512f && super::features().avx512bf16 {
        // SAFETY: the CPU has the features; lengths are equal.
        unsafe { x86::convert_avx512(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16_bits(*s);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert_avx512(src: &[f32], dst: &mut [u16]) {
        let n = src.len() / 32 * 32;
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for i in (0..n).step_by(32) {
            let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(i + 16)), _mm512_loadu_ps(s.add(i)));
            _mm512_storeu_si512(
                d.add(i) as *mut __m512i,
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
        for i in n..src.len() {
            dst[i] = super::bf16_bits(src[i]);
        }
    }
}

thread_local! {
    static POOL16: std::cell::RefCell<Vec<Vec<u16>>> = const { std::cell::RefCell::new(Vec::new()) };
    static POOL32: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers reused across calls on one thread: the operands of a 512-token product are a few
/// MB, and fresh allocations of that size cost a page fault per 4 KB every call.
pub trait Pooled: Sized + Copy + Default + 'static {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<Self>>>>;

    /// A buffer of `n` values from this thread's pool, contents unspecified.
    fn take(n: usize) -> Vec<Self> {
        let mut v = Self::pool()
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_default();
        v.resize(n, Self::default());
        v
    }

    /// Returns `v` to this thread's pool.
    fn give(v: Vec<Self>) {
        Self::pool().with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < 4 {
                p.push(v);
            }
        })
    }
}

impl Pooled for u16 {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<u16>>>> {
        &POOL16
    }
}

impl Pooled for u32 {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<u32>>>> {
        &POOL32
    }
}

/// `src` (rows × cols f32, row-major) into `dst` as bf16 rows of `cols_p` values (≥ cols, a
/// multiple of K), `rows_p` rows (≥ rows), zero-padded.
pub fn to_padded_bf16(
    src: &[f32],
    rows: usize,
    cols: usize,
    rows_p: usize,
    cols_p: usize,
    dst: &mut [u16],
) {
    debug_assert!(cols_p >= cols && cols_p.is_multiple_of(K) && rows_p >= rows);
    assert_eq!(dst.len(), rows_p * cols_p);
    for (r, d) in dst.chunks_exact_mut(cols_p).enumerate() {
        if r < rows {
            convert(&src[r * cols..(r + 1) * cols], &mut d[..cols]);
            d[cols..].fill(0);
        } else {
            d.fill(0);
        }
    }
}

/// The B panels of the bf16 row-major `a` (rows_p × cols_p, multiples of 16 and K): one panel
/// per 16 rows, each `cols_p / K` tiles, packed in parallel. Row r of `a` becomes output column r.
pub fn pack_panels(a: &[u16], rows_p: usize, cols_p: usize) -> Vec<u32> {
    debug_assert!(rows_p.is_multiple_of(T) && cols_p.is_multiple_of(K));
    let kc = cols_p / K;
    let mut out = vec![0u32; rows_p * cols_p / 2];
    crate::parallel::for_each_chunk_mut(&mut out, kc * TILE_WORDS, |p, panel| {
        for (k, tile) in panel.chunks_exact_mut(TILE_WORDS).enumerate() {
            for j in 0..T {
                let row = &a[(p * T + j) * cols_p + k * K..][..K];
                for q in 0..K / 2 {
                    tile[q * T + j] = row[2 * q] as u32 | (row[2 * q + 1] as u32) << 16;
                }
            }
        }
    });
    out
}

/// The B panels of a Gram matrix from `xb` (tok_p × cols_p bf16 rows, tok_p a multiple of K,
/// cols_p of 16): output column j is feature j, the shared dimension the tokens. The same
/// layout as [`pack_panels`] of the transpose, built straight from pairs of token rows.
pub fn pack_token_pairs(xb: &[u16], tok_p: usize, cols_p: usize, out: &mut [u32]) {
    debug_assert!(tok_p.is_multiple_of(K) && cols_p.is_multiple_of(T));
    assert_eq!((xb.len(), out.len()), (tok_p * cols_p, tok_p * cols_p / 2));
    let kc = tok_p / K;
    for tp in 0..tok_p / 2 {
        let (r0, r1) = (
            &xb[2 * tp * cols_p..][..cols_p],
            &xb[(2 * tp + 1) * cols_p..][..cols_p],
        );
        let (k, q) = (tp / (K / 2), tp % (K / 2));
        for (p, (c0, c1)) in r0.chunks_exact(T).zip(r1.chunks_exact(T)).enumerate() {
            let o = &mut out[(p * kc + k) * TILE_WORDS + q * T..][..T];
            for ((o, a), b) in o.iter_mut().zip(c0).zip(c1) {
                *o = *a as u32 | (*b as u32) << 16;
            }
        }
    }
}

/// The transpose of `a` (rows × cols u16, both multiples of 32) into `out` (cols × rows).
pub fn transpose(a: &[u16], rows: usize, cols: usize, out: &mut [u16]) {
    const S: usize = 32;
    assert_eq!((a.len(), out.len()), (rows * cols, rows * cols));
    for r0 in (0..rows).step_by(S) {
        for c0 in (0..cols).step_by(S) {
            let mut blk = [[0u16; S]; S];
            for (r, b) in blk.iter_mut().enumerate() {
                b.copy_from_slice(&a[(r0 + r) * cols + c0..][..S]);
            }
            for c in 0..S {
                let o = &mut out[(c0 + c) * rows + r0..][..S];
                for (r, o) in o.iter_mut().enumerate() {
                    *o = blk[r][c];
                }
            }
        }
    }
}

/// The inputs of one [`Tiles::block_32x32`].
#[derive(Clone, Copy)]
pub struct Operands {
    /// 32 rows of A, `a_stride` bytes apart.
    pub a: *const u16,
    pub a_stride: usize,
    /// Two B panels of `kc` tiles.
    pub b0: *const u32,
    pub b1: *const u32,
    pub kc: usize,
}

/// Tile configuration: palette 1, every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Tiles configured on this thread; released when dropped. Not Send: the configuration
/// belongs to the thread that loaded it.
pub struct Tiles(std::marker::PhantomData<*const ()>);

impl Tiles {
    /// # Safety
    /// [`detect`] must have returned true in this process.
    pub unsafe fn configure() -> Tiles {
        let mut c = Config([0; 64]);
        c.0[0] = 1;
        for t in 0..8 {
            c.0[16 + 2 * t] = 64;
            c.0[48 + t] = T as u8;
        }
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("ldtilecfg [{}]", in(reg) c.0.as_ptr(), options(nostack, readonly));
        Tiles(std::marker::PhantomData)
    }

    /// c[32 × 32] = A[32 rows × kc·K] · B(panels b0, b1), f32, with rows of `c` `c_stride`
    /// bytes apart: rows 0..16 from A's rows at `a`, 16..32 from `a + 16·a_stride` bytes;
    /// columns 0..16 from panel `b0`, 16..32 from `b1`.
    ///
    /// # Safety
    /// `a` must be readable for 32 rows of kc·K bf16 at `a_stride` bytes, `b0` and `b1` for kc
    /// tiles each, `c` writable for 32 rows of 16·2 f32 at `c_stride` bytes.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn block_32x32(&self, op: Operands, c: *mut f32, c_stride: usize) {
        use std::arch::asm;
        let Operands {
            a,
            a_stride,
            b0,
            b1,
            kc,
        } = op;
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let a1 = (a as *const u8).add(16 * a_stride) as *const u16;
        let bs = 4 * T;
        for k in 0..kc {
            let (pa0, pa1) = (a.add(k * K), a1.add(k * K));
            let (pb0, pb1) = (b0.add(k * TILE_WORDS), b1.add(k * TILE_WORDS));
            asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb} * 1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) pa0,
                a1 = in(reg) pa1,
                b0 = in(reg) pb0,
                b1 = in(reg) pb1,
                sa = in(reg) a_stride,
                sb = in(reg) bs,
                options(nostack, readonly),
            );
        }
        let c1 = (c as *mut u8).add(16 * c_stride) as *mut f32;
        asm!(
            "tilestored [{c0} + {sc} * 1], tmm0",
            "tilestored [{c0h} + {sc} * 1], tmm1",
            "tilestored [{c1} + {sc} * 1], tmm2",
            "tilestored [{c1h} + {sc} * 1], tmm3",
            c0 = in(reg) c,
            c0h = in(reg) c.add(T),
            c1 = in(reg) c1,
            c1h = in(reg) c1.add(T),
            sc = in(reg) c_stride,
            options(nostack),
        );
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tiles were configured by this value's constructor.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem))
        };
    }
}

/// A panel's tiles, for [`Tiles::block_32x32`].
pub fn panel(panels: &[u32], kc: usize, p: usize) -> *const u32 {
    panels[p * kc * TILE_WORDS..(p + 1) * kc * TILE_WORDS].as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_equals_the_half_crate_on_normal_values() {
        // Every 4099th f32 pattern (covers every exponent, ties, NaNs, infinities, subnormals).
        for bits in (0..=u32::MAX)
            .step_by(4099)
            .chain([0x7f7f_ffff, 0x3f80_8000, 0x3f81_8000])
        {
            let x = f32::from_bits(bits);
            let want = half::bf16::from_f32(x);
            let got = half::bf16::from_bits(bf16_bits(x));
            if x.is_nan() {
                assert!(got.is_nan(), "{bits:#x}");
            } else if x.is_subnormal() {
                assert_eq!(
                    got.to_bits(),
                    (bits >> 16) as u16 & 0x8000,
                    "{bits:#x} flushes to zero"
                );
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn simd_conversion_equals_the_scalar_rounding() {
        let src: Vec<f32> = (0..100_003u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .chain([f32::NAN, f32::INFINITY, -0.0, 1e-40, -1e-40, 3.0e38])
            .collect();
        let mut dst = vec![0u16; src.len()];
        convert(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            let want = bf16_bits(*s);
            assert!(
                *d == want || (s.is_nan() && (*d & 0x7fff) > 0x7f80),
                "{:#x}: {d:#x} vs {want:#x}",
                s.to_bits()
            );
        }
    }

    #[test]
    fn gram_operands_agree_with_the_generic_packing() {
        let (tok_p, cols_p) = (64, 32);
        let xb: Vec<u16> = (0..tok_p * cols_p)
            .map(|i| (i * 7919 % 65521) as u16)
            .collect();
        let mut xt = vec![0u16; xb.len()];
        transpose(&xb, tok_p, cols_p, &mut xt);
        for t in 0..tok_p {
            for i in 0..cols_p {
                assert_eq!(xt[i * tok_p + t], xb[t * cols_p + i]);
            }
        }
        let mut pairs = vec![0u32; xb.len() / 2];
        pack_token_pairs(&xb, tok_p, cols_p, &mut pairs);
        assert_eq!(pairs, pack_panels(&xt, cols_p, tok_p));
    }
}
