//! compressed-tensors folders (llm-compressor's output and this project's `quantize int8|fp8`):
//! each linear's config group (targets, ignore) says how its tensors are stored, and it loads as
//! the matching matrix: float-quantized → [`Fp8Matrix`], int-quantized and 8-bit pack-quantized
//! → [`Int8Matrix`], dense or ignored → the dense weight. Activations are then quantized at run
//! time as the group's `input_activations` say, the way vLLM does.

use std::path::Path;
use std::sync::Arc;

use kernels::{
    Fp8Activations, Fp8Matrix, Fp8WeightScale, Int8Activations, Int8Matrix, ScaledMatrixError,
    SharedMatrix,
};
use quant::bytes::SharedBytes;
use quant::hf::compressed_tensors::{
    packed_int8_cols, unpack_int8_row, CompressedTensorsConfig, Format, Group, QuantArgs,
    QuantType, Strategy,
};
use safetensors::Dtype;

use super::hf::{dense_matrix, LinearFormat};
use super::safetensors_dir::{dense_ggml_type, SafetensorsDir};
use super::LoadError;

pub struct CompressedTensors {
    cfg: CompressedTensorsConfig,
}

impl CompressedTensors {
    /// The format of the folder whose config.json (at `config_path`) has quantization_config `q`.
    pub fn from_config(
        config_path: &Path,
        q: &serde_json::Value,
    ) -> Result<CompressedTensors, LoadError> {
        let cfg = CompressedTensorsConfig::from_json(config_path, q)?;
        if cfg.has_kv_cache_scheme {
            tracing::warn!(
                "{}: kv_cache_scheme is set; this runtime keeps the KV cache in f32",
                config_path.display()
            );
        }
        Ok(CompressedTensors { cfg })
    }

    fn unsupported(&self, group: &Group, field: &str, msg: String) -> LoadError {
        LoadError::Unsupported {
            path: self.cfg.path.clone(),
            field: format!("quantization_config.config_groups.{}.{field}", group.name),
            msg,
        }
    }
}

impl LinearFormat for CompressedTensors {
    fn load(
        &self,
        st: &SafetensorsDir,
        prefix: &str,
        rows: usize,
        cols: usize,
    ) -> Result<SharedMatrix, LoadError> {
        let Some(group) = self.cfg.group_for(prefix, "Linear") else {
            return dense_matrix(st, &format!("{prefix}.weight"), rows, cols);
        };
        let Some(w) = &group.weights else {
            return dense_matrix(st, &format!("{prefix}.weight"), rows, cols);
        };
        let linear = Linear {
            st,
            prefix,
            rows,
            cols,
        };
        match group.format {
            Format::Dense => dense_matrix(st, &format!("{prefix}.weight"), rows, cols),
            Format::FloatQuantized => self.fp8(group, w, &linear),
            Format::NaiveQuantized if w.kind == QuantType::Float => self.fp8(group, w, &linear),
            Format::IntQuantized | Format::NaiveQuantized => self.int8(group, w, &linear, false),
            Format::PackQuantized if w.num_bits == 8 => self.int8(group, w, &linear, true),
            Format::PackQuantized => Err(self.unsupported(
                group,
                "weights.num_bits",
                format!(
                    "pack-quantized {}-bit weights are not supported by this loader (8-bit only)",
                    w.num_bits
                ),
            )),
            Format::Other => Err(self.unsupported(
                group,
                "format",
                format!(
                    "{:?} is not supported (dense, int-quantized, float-quantized, naive-quantized, 8-bit pack-quantized are)",
                    group.format_name
                ),
            )),
        }
    }
}

/// The linear being loaded.
struct Linear<'a> {
    st: &'a SafetensorsDir,
    prefix: &'a str,
    rows: usize,
    cols: usize,
}

impl Linear<'_> {
    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    fn matrix_error(&self, suffix: &str, e: ScaledMatrixError) -> LoadError {
        let name = self.name(suffix);
        let path = self
            .st
            .get(&name)
            .map_or_else(|| self.st.dir.clone(), |e| self.st.file_path(e).to_owned());
        LoadError::Tensor {
            path,
            name,
            msg: e.to_string(),
        }
    }

    /// A float tensor (f32/f16/bf16) of one of the accepted shapes, as f32.
    fn floats(&self, suffix: &str, shapes: &[Vec<usize>]) -> Result<Vec<f32>, LoadError> {
        let name = self.name(suffix);
        let e = self.st.entry(&name)?;
        let path = self.st.file_path(e).to_owned();
        let Some(ty) = dense_ggml_type(e.dtype) else {
            return Err(LoadError::Tensor {
                path,
                name,
                msg: format!("dtype {:?}, expected F32, F16 or BF16", e.dtype),
            });
        };
        if !shapes.contains(&e.shape) {
            return Err(LoadError::Shape {
                path,
                name,
                want: shapes[0].clone(),
                got: e.shape.clone(),
            });
        }
        let mut v = vec![0f32; e.shape.iter().product()];
        quant::ggml::dequantize_row(ty, &self.st.bytes(e), &mut v).map_err(|err| {
            LoadError::Tensor {
                path,
                name,
                msg: err.to_string(),
            }
        })?;
        Ok(v)
    }

    /// weight_scale of a per-tensor or per-channel strategy, expanded to one scale per row.
    fn row_scales(&self, strategy: Strategy) -> Result<Vec<f32>, LoadError> {
        Ok(match strategy {
            Strategy::Tensor => {
                vec![self.floats("weight_scale", &[vec![1], vec![]])?[0]; self.rows]
            }
            _ => self.floats("weight_scale", &[vec![self.rows, 1], vec![self.rows]])?,
        })
    }
}

impl CompressedTensors {
    /// The weights' quantization must be symmetric 8-bit of this strategy set.
    fn check_weights(
        &self,
        group: &Group,
        w: &QuantArgs,
        strategies: &[Strategy],
    ) -> Result<Strategy, LoadError> {
        if w.num_bits != 8 {
            return Err(self.unsupported(
                group,
                "weights.num_bits",
                format!("{} bits (8 supported)", w.num_bits),
            ));
        }
        if !w.symmetric {
            return Err(self.unsupported(
                group,
                "weights.symmetric",
                "asymmetric weights (zero points) are not supported".into(),
            ));
        }
        let s = w.effective_strategy();
        if !strategies.contains(&s) {
            return Err(self.unsupported(
                group,
                "weights.strategy",
                format!("{s:?} is not supported here (supported: {strategies:?})"),
            ));
        }
        Ok(s)
    }

    fn fp8(&self, group: &Group, w: &QuantArgs, l: &Linear) -> Result<SharedMatrix, LoadError> {
        if w.kind != QuantType::Float {
            return Err(self.unsupported(
                group,
                "weights.type",
                format!("integer weights in the {} format", group.format_name),
            ));
        }
        let strategy = self.check_weights(
            group,
            w,
            &[Strategy::Tensor, Strategy::Channel, Strategy::Block],
        )?;
        let e =
            l.st.expect(&l.name("weight"), &[Dtype::F8_E4M3], &[l.rows, l.cols])?;
        let scale = match strategy {
            Strategy::Block => {
                let [br, bc] = w.block_structure.as_deref().unwrap_or(&[]) else {
                    return Err(self.unsupported(
                        group,
                        "weights.block_structure",
                        "block strategy without a [rows, cols] block_structure".into(),
                    ));
                };
                let shape = vec![l.rows.div_ceil(*br), l.cols.div_ceil(*bc)];
                Fp8WeightScale::Block {
                    rows: *br,
                    cols: *bc,
                    scales: l.floats("weight_scale", &[shape])?,
                }
            }
            Strategy::Tensor => Fp8WeightScale::Tensor(l.row_scales(strategy)?[0]),
            _ => Fp8WeightScale::Channel(l.row_scales(strategy)?),
        };
        let act = match &group.input_activations {
            None => Fp8Activations::Unquantized,
            Some(a) => {
                self.check_activations(group, a, QuantType::Float)?;
                match (a.effective_strategy(), a.dynamic.is_dynamic()) {
                    (Strategy::Token, true) => Fp8Activations::DynamicPerToken,
                    (Strategy::Group, true) => match a.group_size {
                        Some(g) if g > 0 => Fp8Activations::DynamicGroup(g as usize),
                        _ => {
                            return Err(self.unsupported(
                                group,
                                "input_activations.group_size",
                                "group strategy needs a positive group_size".into(),
                            ))
                        }
                    },
                    (Strategy::Tensor, false) => {
                        Fp8Activations::Static(l.floats("input_scale", &[vec![1], vec![]])?[0])
                    }
                    (s, d) => {
                        return Err(self.unsupported(
                            group,
                            "input_activations",
                            format!("FP8 activations {s:?} with dynamic={d} are not supported (token/group dynamic, tensor static are)"),
                        ))
                    }
                }
            }
        };
        let m = Fp8Matrix::new(l.st.bytes(e), l.rows, l.cols, scale, act).map_err(|err| {
            let suffix = if matches!(err, ScaledMatrixError::NanWeight { .. }) {
                "weight"
            } else {
                "weight_scale"
            };
            l.matrix_error(suffix, err)
        })?;
        Ok(Arc::new(m))
    }

    fn int8(
        &self,
        group: &Group,
        w: &QuantArgs,
        l: &Linear,
        packed: bool,
    ) -> Result<SharedMatrix, LoadError> {
        if w.kind != QuantType::Int {
            return Err(self.unsupported(
                group,
                "weights.type",
                format!("{} weights in an integer format", group.format_name),
            ));
        }
        let strategy = self.check_weights(group, w, &[Strategy::Tensor, Strategy::Channel])?;
        let q = if packed {
            let shape = l.integers("weight_shape")?;
            if shape != [l.rows as i64, l.cols as i64] {
                return Err(LoadError::Tensor {
                    path: l.st.dir.clone(),
                    name: l.name("weight_shape"),
                    msg: format!("{shape:?}, expected [{}, {}]", l.rows, l.cols),
                });
            }
            let words = packed_int8_cols(l.cols);
            let e =
                l.st.expect(&l.name("weight_packed"), &[Dtype::I32], &[l.rows, words])?;
            let bytes = l.st.bytes(e);
            let mut q = vec![0i8; l.rows * l.cols];
            for (row, out) in bytes
                .chunks_exact(4 * words)
                .zip(q.chunks_exact_mut(l.cols))
            {
                unpack_int8_row(row, l.cols, out);
            }
            SharedBytes::from_vec(bytemuck::cast_slice(&q).to_vec())
        } else {
            let e =
                l.st.expect(&l.name("weight"), &[Dtype::I8], &[l.rows, l.cols])?;
            l.st.bytes(e)
        };
        let act = match &group.input_activations {
            None => Int8Activations::Unquantized,
            Some(a) => {
                self.check_activations(group, a, QuantType::Int)?;
                if !(a.effective_strategy() == Strategy::Token && a.dynamic.is_dynamic()) {
                    return Err(self.unsupported(
                        group,
                        "input_activations",
                        "int8 activations other than per-token dynamic (static SmoothQuant-O3 scales) are not supported".into(),
                    ));
                }
                Int8Activations::DynamicPerToken
            }
        };
        let scales = l.row_scales(strategy)?;
        let m = Int8Matrix::new(q, l.rows, l.cols, scales, act)
            .map_err(|err| l.matrix_error("weight_scale", err))?;
        Ok(Arc::new(m))
    }

    fn check_activations(
        &self,
        group: &Group,
        a: &QuantArgs,
        kind: QuantType,
    ) -> Result<(), LoadError> {
        if a.kind != kind || a.num_bits != 8 || !a.symmetric {
            return Err(self.unsupported(
                group,
                "input_activations",
                format!(
                    "{:?} {}-bit {} activations with {:?} weights are not supported",
                    a.kind,
                    a.num_bits,
                    if a.symmetric {
                        "symmetric"
                    } else {
                        "asymmetric"
                    },
                    kind
                ),
            ));
        }
        Ok(())
    }
}

impl Linear<'_> {
    /// A small integer tensor (I32 or I64) as i64 values, e.g. pack-quantized's weight_shape.
    fn integers(&self, suffix: &str) -> Result<Vec<i64>, LoadError> {
        let name = self.name(suffix);
        let e = self.st.entry(&name)?;
        let bytes = self.st.bytes(e);
        let vals: Vec<i64> = match e.dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
            d => {
                return Err(LoadError::Tensor {
                    path: self.st.file_path(e).to_owned(),
                    name,
                    msg: format!("dtype {d:?}, expected I32 or I64"),
                })
            }
        };
        Ok(vals)
    }
}
