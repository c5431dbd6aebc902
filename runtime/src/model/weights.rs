//! The Llama-family model's parameters, each linear kept in its stored format.

use std::sync::Arc;

use kernels::{Matrix, SharedMatrix};
use quant::hf::LlamaConfig;

use super::rope::Rope;
use crate::tokenizer::Tokenizer;

/// The seven linears of a transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearKind {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LinearKind {
    pub const ALL: [LinearKind; 7] = [
        LinearKind::Q,
        LinearKind::K,
        LinearKind::V,
        LinearKind::O,
        LinearKind::Gate,
        LinearKind::Up,
        LinearKind::Down,
    ];

    /// Module path inside a Hugging Face block ("self_attn.q_proj").
    pub fn hf_name(self) -> &'static str {
        match self {
            LinearKind::Q => "self_attn.q_proj",
            LinearKind::K => "self_attn.k_proj",
            LinearKind::V => "self_attn.v_proj",
            LinearKind::O => "self_attn.o_proj",
            LinearKind::Gate => "mlp.gate_proj",
            LinearKind::Up => "mlp.up_proj",
            LinearKind::Down => "mlp.down_proj",
        }
    }

    /// Tensor stem inside a GGUF block ("attn_q").
    pub fn gguf_name(self) -> &'static str {
        match self {
            LinearKind::Q => "attn_q",
            LinearKind::K => "attn_k",
            LinearKind::V => "attn_v",
            LinearKind::O => "attn_output",
            LinearKind::Gate => "ffn_gate",
            LinearKind::Up => "ffn_up",
            LinearKind::Down => "ffn_down",
        }
    }
}

#[derive(Clone)]
pub struct Linear {
    pub w: SharedMatrix,
    pub bias: Option<Arc<Vec<f32>>>,
}

impl Linear {
    pub fn new(w: SharedMatrix) -> Linear {
        Linear { w, bias: None }
    }

    /// y = x·Wᵀ + b for `n_tok` rows of x.
    pub fn forward(&self, x: &[f32], n_tok: usize) -> Vec<f32> {
        let mut y = Vec::new();
        self.forward_into(x, n_tok, &mut y);
        y
    }

    /// [`forward`](Self::forward) into `y`, resized to n_tok × rows (its capacity is reused).
    pub fn forward_into(&self, x: &[f32], n_tok: usize, y: &mut Vec<f32>) {
        // Every element is overwritten by the product: no need to clear old contents.
        y.resize(n_tok * self.w.rows(), 0.0);
        self.w.matmul(x, n_tok, y);
        if let Some(b) = &self.bias {
            kernels::ops::add_bias(y, b);
        }
    }
}

#[derive(Clone)]
pub struct Layer {
    pub attn_norm: Arc<Vec<f32>>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Arc<Vec<f32>>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Layer {
    pub fn linear(&self, kind: LinearKind) -> &Linear {
        match kind {
            LinearKind::Q => &self.q,
            LinearKind::K => &self.k,
            LinearKind::V => &self.v,
            LinearKind::O => &self.o,
            LinearKind::Gate => &self.gate,
            LinearKind::Up => &self.up,
            LinearKind::Down => &self.down,
        }
    }

    pub fn linear_mut(&mut self, kind: LinearKind) -> &mut Linear {
        match kind {
            LinearKind::Q => &mut self.q,
            LinearKind::K => &mut self.k,
            LinearKind::V => &mut self.v,
            LinearKind::O => &mut self.o,
            LinearKind::Gate => &mut self.gate,
            LinearKind::Up => &mut self.up,
            LinearKind::Down => &mut self.down,
        }
    }
}

pub struct Model {
    pub config: LlamaConfig,
    pub rope: Rope,
    pub embed: SharedMatrix,
    pub layers: Vec<Layer>,
    pub output_norm: Arc<Vec<f32>>,
    /// The LM head; the same matrix as `embed` when embeddings are tied.
    pub output: SharedMatrix,
    pub tokenizer: Option<Tokenizer>,
    /// Where the model came from and in what form, for reports.
    pub source: String,
}

impl Model {
    /// Total bytes of all weights in their stored form (shared matrices counted once).
    pub fn storage_bytes(&self) -> usize {
        let mut seen: Vec<*const ()> = Vec::new();
        let mut total = 0;
        let mut add = |m: &SharedMatrix| {
            let p = Arc::as_ptr(m) as *const ();
            if !seen.contains(&p) {
                seen.push(p);
                total += m.storage_bytes();
            }
        };
        add(&self.embed);
        add(&self.output);
        for l in &self.layers {
            for k in LinearKind::ALL {
                add(&l.linear(k).w);
            }
        }
        total
    }

    /// Number of weight parameters of the linears and embeddings (shared counted once).
    pub fn n_params(&self) -> usize {
        let per_layer: usize = LinearKind::ALL
            .iter()
            .map(|k| {
                let w = &self.layers[0].linear(*k).w;
                w.rows() * w.cols()
            })
            .sum();
        let head = if Arc::ptr_eq(&self.embed, &self.output) {
            0
        } else {
            self.output.rows() * self.output.cols()
        };
        self.layers.len() * per_layer + self.embed.rows() * self.embed.cols() + head
    }

    /// Readies every matrix that forward passes multiply with (`Matrix::prepare`), so that the
    /// first pass is not slowed by one-time work. Passes work without it.
    pub fn prepare(&self) {
        for l in &self.layers {
            for k in LinearKind::ALL {
                l.linear(k).w.prepare();
            }
        }
        self.output.prepare();
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }
}

/// Convenience for matrices that are not shared elsewhere.
pub fn shared<M: Matrix + 'static>(m: M) -> SharedMatrix {
    Arc::new(m)
}
