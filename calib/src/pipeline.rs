//! The layer-by-layer calibration pipeline: every sample's hidden states enter block 0; each
//! block is handed to a [`BlockQuantizer`] as a [`Block`], whose stage methods run the block's
//! forward one linear-input site at a time over all samples, so the quantizer can quantize the
//! linears of a site from inputs that already pass through the quantized linears before it
//! (true-sequential: [q, k, v] → [o] → [gate, up] → [down]). The quantized block's outputs are
//! the next block's inputs. Memory: the model (memory-mapped) plus one block of activations.
//!
//! Blocks run in the Hugging Face (rotate-half) layout whatever the model's storage, so the
//! weights a quantizer sees and returns are those the artifact holds.

use std::collections::BTreeMap;

use rayon::prelude::*;

use quant::groupq::GroupQuant;
use runtime::export::hf_linear_weight;
use runtime::model::{BlockCtx, Layer, Linear, LinearKind, Rope, RopeStyle};
use runtime::Model;

/// The quantized linears of one block, in nn.Linear layout.
pub type BlockQuant = BTreeMap<LinearKind, GroupQuant>;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("model.layers.{layer}.{}: {msg}", kind.hf_name())]
    Linear {
        layer: usize,
        kind: LinearKind,
        msg: String,
    },
    #[error("model.layers.{layer}: {msg}")]
    Block { layer: usize, msg: String },
    #[error("{0}")]
    Sink(String),
}

/// An algorithm that quantizes one block at a time.
pub trait BlockQuantizer {
    /// Quantizes every linear of `block`, leaving `block.layer` as the block the artifact
    /// holds (norms rescaled, linears replaced by their dequantized weights) and the block's
    /// outputs in place of its inputs (through [`Block::attn_residual`] and
    /// [`Block::mlp_residual`]).
    fn quantize_block(&mut self, block: &mut Block) -> Result<BlockQuant, PipelineError>;
}

/// One block being quantized: its working weights and the hidden states of every sample.
pub struct Block<'a> {
    pub index: usize,
    /// Working copy in the Hugging Face layout, every linear a [`calib_matrix`].
    pub layer: Layer,
    config: &'a quant::hf::LlamaConfig,
    rope: &'a Rope,
    hidden: &'a mut [Vec<f32>],
    /// Whether this is the model's last block (its outputs feed nothing).
    last: bool,
}

/// Per-sample activations at one site (n_tok × width each).
pub type Acts = Vec<Vec<f32>>;

impl Block<'_> {
    fn ctx(&self) -> BlockCtx<'_> {
        BlockCtx {
            config: self.config,
            rope: self.rope,
        }
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Tokens of each sample.
    pub fn sample_lens(&self) -> Vec<usize> {
        let d = self.hidden_size();
        self.hidden.iter().map(|h| h.len() / d).collect()
    }

    /// The inputs of q, k and v for every sample (`layer`'s attention norm).
    pub fn attn_inputs(&self, layer: &Layer) -> Acts {
        let ctx = self.ctx();
        self.hidden
            .iter()
            .map(|x| layer.attn_input(&ctx, x))
            .collect()
    }

    /// The inputs of o: attention of each sample's attention input `h` (whole samples, each
    /// from position 0) through `layer`'s q, k and v, in bf16 as the linears are.
    pub fn attention(&self, layer: &Layer, h: &[Vec<f32>]) -> Acts {
        let ctx = self.ctx();
        let d = self.hidden_size();
        h.iter()
            .map(|h| layer.sequence_attention_bf16(&ctx, h, h.len() / d))
            .collect()
    }

    /// Every sample through the whole block with `layer` (whose weights must not change in
    /// between: for quantizers that only observe), [`Layer::calibration_pass`] on one thread
    /// per sample, so nothing but the hidden states outlives a sample and the products run
    /// without the synchronization of splitting each one over threads. `see(site, input,
    /// n_tok)` is called at each of the block's [`SITES`](runtime::model::staged::SITES) up
    /// to `last_site` (only the last block stops early: its outputs feed nothing); its results
    /// come back per sample, in site order. The hidden states become the block's outputs.
    pub fn observe_samples<T: Send>(
        &mut self,
        layer: &Layer,
        last_site: LinearKind,
        see: impl Fn(LinearKind, &[f32], usize) -> T + Sync,
    ) -> Vec<Vec<T>> {
        let ctx = BlockCtx {
            config: self.config,
            rope: self.rope,
        };
        let d = self.hidden_size();
        let stop = if self.last {
            last_site
        } else {
            LinearKind::Down
        };
        let pass = |x: &mut Vec<f32>| {
            let n = x.len() / d;
            let mut seen = Vec::new();
            layer.calibration_pass(&ctx, x, n, stop, |kind, input| {
                seen.push(see(kind, input, n))
            });
            seen
        };
        let mut out: Vec<Vec<T>> = (0..self.hidden.len()).map(|_| Vec::new()).collect();
        if self.hidden.len() < kernels::parallel::threads() {
            // Too few samples to occupy the threads: each product is split over them instead.
            for (x, o) in self.hidden.iter_mut().zip(&mut out) {
                *o = pass(x);
            }
        } else {
            kernels::parallel::for_each_chunk_pair_mut(self.hidden, 1, &mut out, 1, |_, x, o| {
                o[0] = pass(&mut x[0])
            });
        }
        out
    }

    /// Every sample's hidden state (the block's inputs, or its outputs once both residuals
    /// are added).
    pub fn hidden(&self) -> &[Vec<f32>] {
        self.hidden
    }

    /// Adds o(attention) to every sample's hidden state: the block is past its attention.
    pub fn attn_residual(&mut self, attn: &[Vec<f32>]) {
        let d = self.hidden_size();
        for (x, a) in self.hidden.iter_mut().zip(attn) {
            let n = x.len() / d;
            self.layer.attn_residual(x, a, n);
        }
    }

    /// The inputs of gate and up (`layer`'s MLP norm of the hidden states after attention).
    pub fn mlp_inputs(&self, layer: &Layer) -> Acts {
        let ctx = self.ctx();
        self.hidden
            .iter()
            .map(|x| layer.mlp_input(&ctx, x))
            .collect()
    }

    /// The inputs of down: silu(gate(h))·up(h) through `layer`.
    pub fn mlp_acts(&self, layer: &Layer, h: &[Vec<f32>]) -> Acts {
        let d = self.hidden_size();
        h.iter().map(|h| layer.mlp_act(h, h.len() / d)).collect()
    }

    /// Adds down(act) to every sample's hidden state: the hidden states become the block's
    /// outputs.
    pub fn mlp_residual(&mut self, act: &[Vec<f32>]) {
        let d = self.hidden_size();
        for (x, a) in self.hidden.iter_mut().zip(act) {
            let n = x.len() / d;
            self.layer.mlp_residual(x, a, n);
        }
    }
}

/// The f32 weight of `kind` in `layer` (row-major, rows × cols).
pub fn weight_of(layer: &Layer, kind: LinearKind) -> Vec<f32> {
    let m = &layer.linear(kind).w;
    let cols = m.cols();
    let mut w = vec![0f32; m.rows() * cols];
    for (r, row) in w.chunks_exact_mut(cols).enumerate() {
        m.dequantize_row(r, row);
    }
    w
}

/// The [rows × cols] weight `w` for the large batches of calibration: multiplied in bf16 with
/// f32 sums (AMX tiles where the CPU has them), returned unrounded by `dequantize_row`.
pub fn calib_matrix(w: &[f32], rows: usize, cols: usize) -> kernels::SharedMatrix {
    std::sync::Arc::new(kernels::DenseBf16Matrix::new(w, rows, cols))
}

/// Replaces the weight of `kind` in `layer` with `w` (rows × cols) as a [`calib_matrix`],
/// keeping its bias.
pub fn set_weight(layer: &mut Layer, kind: LinearKind, w: &[f32]) {
    let lin = layer.linear_mut(kind);
    let (rows, cols) = (lin.w.rows(), lin.w.cols());
    lin.w = calib_matrix(w, rows, cols);
}

/// Runs `quantizer` over every block of `model` on the tokenized `samples`, handing each
/// block's result to `sink` (block index, the block as the artifact holds it, its quantized
/// linears) as soon as it is done.
pub fn run(
    model: &Model,
    samples: &[Vec<u32>],
    quantizer: &mut dyn BlockQuantizer,
    mut sink: impl FnMut(usize, &Layer, BlockQuant) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    let mut hidden: Vec<Vec<f32>> = samples.iter().map(|s| model.embed_tokens(s)).collect();
    // The rotate-half layout, with the model's own frequencies.
    let mut rope = model.rope.clone();
    let permuted = rope.style == RopeStyle::Adjacent;
    rope.style = RopeStyle::Halves;
    let config = &model.config;
    for (index, orig) in model.layers.iter().enumerate() {
        let mut layer = orig.clone();
        let biased_qk = [LinearKind::Q, LinearKind::K]
            .into_iter()
            .find(|&k| orig.linear(k).bias.is_some());
        if let (true, Some(kind)) = (permuted, biased_qk) {
            return Err(PipelineError::Linear {
                layer: index,
                kind,
                msg: "q/k biases in a llama-layout GGUF are not supported".into(),
            });
        }
        // The seven weights are unpacked and repacked at once (each alone is a serial copy).
        let linears: Vec<(LinearKind, Linear)> = LinearKind::ALL
            .par_iter()
            .map(|&kind| {
                let src = orig.linear(kind);
                let w = hf_linear_weight(model, orig, kind);
                let lin = Linear {
                    w: calib_matrix(&w, src.w.rows(), src.w.cols()),
                    bias: src.bias.clone(),
                };
                (kind, lin)
            })
            .collect();
        for (kind, lin) in linears {
            *layer.linear_mut(kind) = lin;
        }
        let mut block = Block {
            index,
            layer,
            config,
            rope: &rope,
            hidden: &mut hidden,
            last: index + 1 == model.layers.len(),
        };
        let quantized = quantizer.quantize_block(&mut block)?;
        let layer = block.layer;
        sink(index, &layer, quantized)?;
    }
    Ok(())
}

/// Quantizes every linear of every block without calibration (round to nearest): `quantize`
/// gets each linear's Hugging Face-layout weight (rows × cols).
pub fn run_uncalibrated(
    model: &Model,
    quantize: impl Fn(LinearKind, &[f32], usize, usize) -> GroupQuant + Sync,
    mut sink: impl FnMut(usize, &Layer, BlockQuant) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    for (index, layer) in model.layers.iter().enumerate() {
        let quantized: BlockQuant = LinearKind::ALL
            .par_iter()
            .map(|&kind| {
                let m = &layer.linear(kind).w;
                let w = hf_linear_weight(model, layer, kind);
                (kind, quantize(kind, &w, m.rows(), m.cols()))
            })
            .collect();
        sink(index, layer, quantized)?;
    }
    Ok(())
}

/// Adds the Gram matrix XᵀX of every sample's activations (width × width; f32 sums, as GPTQ
/// accumulates its Hessians on a GPU) to `h`.
pub fn accumulate_gram(acts: &[Vec<f32>], width: usize, h: &mut quant::gptq::Hessian) {
    let mut g = vec![0f32; width * width];
    let mut tokens = 0;
    for a in acts {
        let n = a.len() / width;
        kernels::gram::add_gram(a, n, width, &mut g);
        tokens += n;
    }
    h.add_gram(&g, tokens);
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::model::synthetic::SyntheticSpec;

    /// Leaves every weight as it is and records each block's outputs.
    struct Identity(Vec<Acts>);

    impl BlockQuantizer for Identity {
        fn quantize_block(&mut self, b: &mut Block) -> Result<BlockQuant, PipelineError> {
            let layer = b.layer.clone();
            let h = b.attn_inputs(&layer);
            let a = b.attention(&layer, &h);
            b.attn_residual(&a);
            let h2 = b.mlp_inputs(&layer);
            let act = b.mlp_acts(&layer, &h2);
            b.mlp_residual(&act);
            self.0.push(b.hidden().to_vec());
            Ok(BlockQuant::new())
        }
    }

    #[test]
    fn unquantized_blocks_reproduce_the_forward_pass() {
        let model = SyntheticSpec::default().build(9);
        let samples = vec![vec![1u32, 2, 3, 4, 5], vec![6u32, 7, 8]];
        let mut seen = Vec::new();
        let mut q = Identity(Vec::new());
        run(&model, &samples, &mut q, |i, _, quant| {
            assert!(quant.is_empty());
            seen.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![0, 1]);
        let ctx = model.block_ctx();
        for (s, tokens) in samples.iter().enumerate() {
            let mut x = model.embed_tokens(tokens);
            let mut cache = model.new_cache();
            for (i, layer) in model.layers.iter().enumerate() {
                layer.forward(&ctx, i, &mut x, tokens.len(), &mut cache.layers[i], None);
                // The pipeline multiplies in bf16 (inputs and weights rounded, f32 sums), the
                // model in f32: each linear's relative error is ~2⁻⁹, so two blocks stay well
                // inside 2% of the activations' scale, while a wrong or missing step is O(1).
                let err = q.0[i][s]
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let scale = x.iter().map(|v| v.abs()).fold(0f32, f32::max);
                assert!(
                    err <= 2e-2 * scale,
                    "sample {s}, block {i}: {err} of {scale}"
                );
            }
        }
    }

    #[test]
    fn q_k_biases_of_a_llama_layout_model_are_refused() {
        // A llama-layout GGUF stores q and k rows permuted for adjacent-pair RoPE; their
        // biases would need the same permutation, which the pipeline does not undo.
        let mut model = SyntheticSpec {
            qkv_bias: true,
            ..SyntheticSpec::default()
        }
        .build(3);
        model.rope.style = RopeStyle::Adjacent;
        let err = run(
            &model,
            &[vec![1u32, 2, 3]],
            &mut Identity(Vec::new()),
            |_, _, _| panic!("no block may be written"),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                PipelineError::Linear {
                    layer: 0,
                    kind: LinearKind::Q,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "model.layers.0.self_attn.q_proj: q/k biases in a llama-layout GGUF are not supported"
        );
    }

    #[test]
    fn gram_accumulation_matches_the_reference_hessian() {
        let acts = vec![
            vec![1.0f32, 2.0, -1.0, 0.5, 3.0, 1.0],
            vec![0.25f32, -2.0, 4.0],
        ];
        let mut a = quant::gptq::Hessian::new(3);
        accumulate_gram(&acts, 3, &mut a);
        let mut b = quant::gptq::Hessian::new(3);
        for x in &acts {
            b.add_rows(x);
        }
        assert_eq!(a.tokens, 3);
        assert_eq!(a.matrix(), b.matrix());
    }
}
