//! Dot products of a weight row stored in any ggml type with activation rows in the matching
//! [`ActFormat`] (8-bit blocks for quantized weights, f32 for float weights), as llama.cpp
//! computes them: integer sums per block, scaled in f32.
//!
//! Each kernel takes one weight row and up to [`MAX_NT`] activation rows, so that unpacking the
//! weights is paid once for several tokens of a prompt batch. A [`DotKernel`] is picked once per
//! matrix (type × instruction-set level); the inner loops never dispatch.

use quant::ggml::GgmlType;

use super::features::Isa;
use super::q8::ActFormat;

mod exact;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Activation rows one kernel call handles.
pub const MAX_NT: usize = 4;

/// Activation rows one group-kernel call handles.
pub const GROUP_NT: usize = 8;

/// Dots of the weight row `w` with `nt` (1..=MAX_NT) activation rows at `x`, `x_stride` bytes
/// apart; results in the first `nt` slots.
///
/// Safety contract: the CPU supports the kernel's level, `w` is whole blocks and `x` covers the
/// `nt` rows of the matching activation format. [`DotKernel`] checks these.
pub(crate) type TileFn = unsafe fn(w: &[u8], x: &[u8], x_stride: usize, nt: usize) -> [f32; MAX_NT];

/// `nt` activation rows `stride` bytes apart, the first at the start of `x`.
// Only the x86 interleaved kernels read these.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
pub(crate) struct ActRows<'a> {
    pub x: &'a [u8],
    pub stride: usize,
    pub nt: usize,
}

/// Where a group kernel writes: row r < `rows` (≤ 16) of token t to `y[t * stride + r]`.
// Only the x86 interleaved kernels read these.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
pub(crate) struct GroupOut {
    pub y: *mut f32,
    pub stride: usize,
    pub rows: usize,
}

/// Dots of the sixteen rows of one group of an interleaved matrix (`cpu::interleave`; `w` is the
/// group's bytes, `nb` blocks per row) with 1..=GROUP_NT activation rows.
///
/// Safety contract: the CPU supports the kernel's level, `w` is a whole group, the activation
/// rows are in the matching format, and `out` is valid for the writes.
pub(crate) type GroupFn = unsafe fn(w: &[u8], nb: usize, x: ActRows, out: GroupOut);

/// The kernel over sixteen interleaved rows of one weight type, where this CPU has one (AVX-512
/// VNNI; the 32-element block types and Q4_K, Q5_K, Q6_K).
#[derive(Clone, Copy)]
pub struct GroupKernel {
    ty: GgmlType,
    tile: GroupFn,
}

impl std::fmt::Debug for GroupKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupKernel({})", self.ty)
    }
}

impl GroupKernel {
    /// The group kernel of level `isa` for `ty`, or None when there is none or this CPU cannot
    /// run it.
    pub fn new(ty: GgmlType, isa: Isa) -> Option<GroupKernel> {
        if !isa.is_available() {
            return None;
        }
        let tile = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::group_kernel(ty),
            _ => None,
        }?;
        Some(GroupKernel { ty, tile })
    }

    pub fn weight_type(&self) -> GgmlType {
        self.ty
    }

    /// See [`GroupFn`].
    ///
    /// # Safety
    /// `w` is a whole group of an interleaved matrix of this type with `nb` blocks per row, `x`
    /// covers `x.nt` (1..=GROUP_NT) rows of the type's activation format, and `out.y` is valid
    /// for writes of `out.rows` (≤ 16) elements at `t * out.stride` for t < x.nt.
    #[inline]
    pub(crate) unsafe fn tile_unchecked(&self, w: &[u8], nb: usize, x: ActRows, out: GroupOut) {
        (self.tile)(w, nb, x, out)
    }
}

/// The dot product of one weight type at one instruction-set level.
#[derive(Clone, Copy)]
pub struct DotKernel {
    ty: GgmlType,
    act: ActFormat,
    isa: Isa,
    tile: TileFn,
}

impl std::fmt::Debug for DotKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DotKernel({} x {:?}, {:?})", self.ty, self.act, self.isa)
    }
}

impl DotKernel {
    /// The kernel of level `isa` for weights of type `ty`: None for activation-only types or when
    /// this CPU cannot run `isa`. Types without a kernel of their own at a level use the next
    /// narrower level's.
    pub fn new(ty: GgmlType, isa: Isa) -> Option<DotKernel> {
        let act = ActFormat::for_weight(ty)?;
        if !isa.is_available() {
            return None;
        }
        let tile = match isa {
            Isa::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => x86::kernel(ty, isa),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::kernel(ty),
            _ => None,
        }
        .or_else(|| scalar::kernel(ty))?;
        Some(DotKernel { ty, act, isa, tile })
    }

    /// The widest kernel this CPU runs for `ty`, or the exact kernel when
    /// `QUANTIZE_ACTIVATIONS=f32` is set.
    pub fn best(ty: GgmlType) -> Option<DotKernel> {
        if super::features::exact_activations() {
            return DotKernel::exact(ty);
        }
        DotKernel::new(ty, Isa::best())
    }

    /// Decodes weights with the reference codec and multiplies with unquantized f32 activations.
    pub fn exact(ty: GgmlType) -> Option<DotKernel> {
        ActFormat::for_weight(ty)?;
        Some(DotKernel {
            ty,
            act: ActFormat::F32,
            isa: Isa::Scalar,
            tile: exact::kernel(ty)?,
        })
    }

    pub fn weight_type(&self) -> GgmlType {
        self.ty
    }

    pub fn act_format(&self) -> ActFormat {
        self.act
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Σ W·x for one weight row and one activation row (in `act_format()`).
    pub fn dot(&self, w_row: &[u8], x_row: &[u8]) -> f32 {
        self.dot_tile(w_row, x_row, x_row.len(), 1)[0]
    }

    /// Dots of one weight row with `nt` activation rows `x_stride` bytes apart in `x`.
    pub fn dot_tile(&self, w_row: &[u8], x: &[u8], x_stride: usize, nt: usize) -> [f32; MAX_NT] {
        let ts = self.ty.type_size();
        assert!(
            w_row.len().is_multiple_of(ts),
            "weight row is not whole blocks"
        );
        let n = w_row.len() / ts * self.ty.block_size();
        let x_row = self.act.row_bytes(n);
        assert!((1..=MAX_NT).contains(&nt), "1..={MAX_NT} activation rows");
        assert!(x_stride >= x_row && x.len() >= (nt - 1) * x_stride + x_row);
        // SAFETY: the level was checked available at construction; lengths were checked above.
        unsafe { (self.tile)(w_row, x, x_stride, nt) }
    }

    /// [`dot_tile`](Self::dot_tile) without the checks, for the matmul loop.
    ///
    /// # Safety
    /// `w_row` is whole blocks of the weight type, `1 <= nt <= MAX_NT`, and `x` covers `nt` rows of
    /// the activation format for that many elements, `x_stride` bytes apart.
    #[inline]
    pub(crate) unsafe fn dot_tile_unchecked(
        &self,
        w_row: &[u8],
        x: &[u8],
        x_stride: usize,
        nt: usize,
    ) -> [f32; MAX_NT] {
        (self.tile)(w_row, x, x_stride, nt)
    }
}
