//! Reference-precision dots: the weight row is decoded with quant's reference codec and multiplied
//! with f32 activations, no activation quantization. Slower than the 8-bit kernels; used when
//! `QUANTIZE_ACTIVATIONS=f32` asks for the model's exact function (reference checks, measuring
//! weight error alone).

use std::cell::RefCell;

use quant::ggml::{dequantize_row, GgmlType};

use super::{TileFn, MAX_NT};
use crate::cpu::dot_f32;

thread_local! {
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// # Safety
/// `w` is whole blocks of type `T`; `x` holds `nt` f32 rows of the decoded length, `x_stride`
/// bytes apart (what [`super::DotKernel::dot_tile`] checks).
unsafe fn tile<const T: u32>(w: &[u8], x: &[u8], x_stride: usize, nt: usize) -> [f32; MAX_NT] {
    let ty = GgmlType::from_id(T).expect("instantiated for known types only");
    let n = w.len() / ty.type_size() * ty.block_size();
    ROW.with_borrow_mut(|row| {
        row.resize(n, 0.0);
        dequantize_row(ty, w, row).expect("whole blocks, checked by the caller");
        let mut out = [0f32; MAX_NT];
        for (t, o) in out.iter_mut().enumerate().take(nt) {
            let xs: &[f32] = bytemuck::cast_slice(&x[t * x_stride..t * x_stride + 4 * n]);
            *o = dot_f32(row, xs);
        }
        out
    })
}

pub(super) fn kernel(ty: GgmlType) -> Option<TileFn> {
    use GgmlType::*;
    macro_rules! k {
        ($($t:ident),*) => {
            match ty {
                $($t => Some(tile::<{ $t as u32 }> as TileFn),)*
                _ => None,
            }
        };
    }
    k!(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, IQ4NL, IQ4XS)
}
