//! What the loaders of group-quantized folders (GPTQ, AWQ, compressed-tensors pack-quantized)
//! share: reading their int32 and float tensors with checked dtypes and shapes, and turning the
//! unpacked weights into the runtime's int kernels.

use std::sync::Arc;

use half::{bf16, f16};
use kernels::{GroupQuantMatrix, SharedMatrix};
use quant::groupq::GroupQuant;
use safetensors::Dtype;

use super::safetensors_dir::SafetensorsDir;
use super::LoadError;

/// An int32 tensor of `shape` as u32 words (the packers' view of the bits).
pub fn words(st: &SafetensorsDir, name: &str, shape: &[usize]) -> Result<Vec<u32>, LoadError> {
    let e = st.expect(name, &[Dtype::I32], shape)?;
    Ok(st
        .bytes(e)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// An int32 tensor of `shape` as signed integers.
pub fn ints(st: &SafetensorsDir, name: &str, shape: &[usize]) -> Result<Vec<i32>, LoadError> {
    Ok(words(st, name, shape)?
        .into_iter()
        .map(|w| w as i32)
        .collect())
}

/// A float tensor (f32, f16 or bf16) of `shape` as f32.
pub fn floats(st: &SafetensorsDir, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
    let e = st.expect(name, &[Dtype::F32, Dtype::F16, Dtype::BF16], shape)?;
    let b = st.bytes(e);
    Ok(match e.dtype {
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// A module the quantizer left in full precision: `prefix.weight` stored instead of
/// `prefix.{packed}`; loaded as a dense matrix.
pub fn left_dense(
    st: &SafetensorsDir,
    prefix: &str,
    packed: &str,
    rows: usize,
    cols: usize,
) -> Option<Result<SharedMatrix, LoadError>> {
    let weight = format!("{prefix}.weight");
    (!st.contains(&format!("{prefix}.{packed}")) && st.contains(&weight))
        .then(|| super::hf::dense_matrix(st, &weight, rows, cols))
}

/// The error for a linear whose tensors are individually fine but do not fit together.
pub fn bad_linear(st: &SafetensorsDir, prefix: &str, msg: impl Into<String>) -> LoadError {
    LoadError::Tensor {
        path: st.dir.clone(),
        name: prefix.into(),
        msg: msg.into(),
    }
}

/// The runtime matrix of an unpacked linear.
pub fn matrix(
    st: &SafetensorsDir,
    prefix: &str,
    q: Result<GroupQuant, String>,
) -> Result<SharedMatrix, LoadError> {
    let q = q.map_err(|m| bad_linear(st, prefix, m))?;
    let m = GroupQuantMatrix::new(&q).map_err(|e| bad_linear(st, prefix, e.to_string()))?;
    Ok(Arc::new(m))
}

/// The group size a config names: -1 or absent means one group per row.
pub fn group_size(v: Option<&serde_json::Value>) -> Result<Option<usize>, String> {
    match v.and_then(|g| g.as_i64()) {
        None | Some(-1) => Ok(None),
        Some(g) if g > 0 => Ok(Some(g as usize)),
        Some(g) => Err(format!("group size {g}")),
    }
}
