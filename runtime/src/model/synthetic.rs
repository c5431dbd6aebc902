//! Small Llama-family models with seeded random f32 weights, built in memory: the fixture that
//! unit tests of the converters, kernels users and evaluators run on without any asset.

use std::sync::Arc;

use kernels::GgmlMatrix;
use quant::bytes::SharedBytes;
use quant::ggml::GgmlType;
use quant::hf::{Family, LlamaConfig};
use rand::{Rng, SeedableRng};

use super::rope::{Rope, RopeStyle};
use super::weights::{shared, Layer, Linear, Model};

/// Shape of a synthetic model.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tied: bool,
    pub qkv_bias: bool,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 96,
            tied: true,
            qkv_bias: false,
        }
    }
}

impl SyntheticSpec {
    pub fn config(&self) -> LlamaConfig {
        LlamaConfig {
            family: if self.qkv_bias {
                Family::Qwen2
            } else {
                Family::Llama
            },
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            head_dim: self.hidden / self.heads,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            max_position_embeddings: 512,
            vocab_size: self.vocab,
            tie_word_embeddings: self.tied,
            qkv_bias: self.qkv_bias,
            bos_token_id: None,
            eos_token_ids: vec![],
            torch_dtype: Some("float32".into()),
        }
    }

    /// The model with weights drawn from `seed`: linears uniform in ±1/√cols (so activations
    /// keep their scale through the blocks), norms near 1, no tokenizer.
    pub fn build(&self, seed: u64) -> Model {
        let config = self.config();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(lo..hi)).collect()
        };
        let mut matrix = |rows: usize, cols: usize| {
            let a = 1.0 / (cols as f32).sqrt();
            f32_matrix(&uniform(rows * cols, -a, a), rows, cols)
        };
        let (d, ff, hd) = (self.hidden, self.intermediate, config.head_dim);
        let (qd, kvd) = (self.heads * hd, self.kv_heads * hd);
        let embed = matrix(self.vocab, d);
        let output = if self.tied {
            embed.clone()
        } else {
            matrix(self.vocab, d)
        };
        let mut layers: Vec<Layer> = (0..self.layers)
            .map(|_| Layer {
                attn_norm: Arc::default(),
                q: Linear::new(matrix(qd, d)),
                k: Linear::new(matrix(kvd, d)),
                v: Linear::new(matrix(kvd, d)),
                o: Linear::new(matrix(d, qd)),
                ffn_norm: Arc::default(),
                gate: Linear::new(matrix(ff, d)),
                up: Linear::new(matrix(ff, d)),
                down: Linear::new(matrix(d, ff)),
            })
            .collect();
        for l in &mut layers {
            l.attn_norm = Arc::new(uniform(d, 0.8, 1.2));
            l.ffn_norm = Arc::new(uniform(d, 0.8, 1.2));
            if self.qkv_bias {
                l.q.bias = Some(Arc::new(uniform(qd, -0.1, 0.1)));
                l.k.bias = Some(Arc::new(uniform(kvd, -0.1, 0.1)));
                l.v.bias = Some(Arc::new(uniform(kvd, -0.1, 0.1)));
            }
        }
        Model {
            rope: Rope::new(&config, RopeStyle::Halves, None),
            output_norm: Arc::new(uniform(d, 0.8, 1.2)),
            config,
            embed,
            layers,
            output,
            tokenizer: None,
            source: format!("synthetic model (seed {seed})"),
        }
    }
}

/// An f32 [rows × cols] matrix holding `v` (row-major).
pub fn f32_matrix(v: &[f32], rows: usize, cols: usize) -> kernels::SharedMatrix {
    assert_eq!(v.len(), rows * cols);
    let bytes = SharedBytes::from_vec(bytemuck::cast_slice(v).to_vec());
    shared(GgmlMatrix::new(GgmlType::F32, bytes, rows, cols).expect("f32 rows of any length"))
}
