//! Number formats and quantizers as pure functions, and the artifact file formats.

pub mod atomic;
pub mod awq;
pub mod bytes;
pub mod fp8;
pub mod ggml;
pub mod gguf;
pub mod gptq;
pub mod groupq;
pub mod hf;
pub mod imatrix;
pub mod int8;
pub mod safetensors_out;
pub mod smoothquant;

/// The index of the first NaN or infinite value of `x`. Chunks are tested with a branch-free
/// fold that vectorizes (a plain `position` takes a branch per value), then searched.
pub fn first_nan_or_inf(x: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1024;
    let bad = |v: &f32| v.to_bits() & 0x7f80_0000 == 0x7f80_0000;
    let (i, chunk) = x
        .chunks(CHUNK)
        .enumerate()
        .find(|(_, c)| c.iter().fold(false, |any, v| any | bad(v)))?;
    chunk.iter().position(bad).map(|j| i * CHUNK + j)
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_nan_or_inf_finds_the_first_nan_or_infinity() {
        let mut x = vec![1.5f32; 5000];
        assert_eq!(super::first_nan_or_inf(&x), None);
        x[4100] = f32::NEG_INFINITY;
        x[3000] = f32::NAN;
        assert_eq!(super::first_nan_or_inf(&x), Some(3000));
        x[1023] = f32::INFINITY;
        assert_eq!(super::first_nan_or_inf(&x), Some(1023));
        assert_eq!(super::first_nan_or_inf(&[f32::MAX, 1e-45, -0.0]), None);
        assert_eq!(super::first_nan_or_inf(&[]), None);
    }
}
