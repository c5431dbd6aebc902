//! The Llama-family forward pass: RMSNorm → attention (RoPE, GQA, causal, KV cache) → residual →
//! RMSNorm → SwiGLU MLP → residual, then final norm and LM head.

use kernels::attention::{causal_attention, AttnShape};
use kernels::ops::{add_assign, rms_norm, swiglu};
use quant::hf::LlamaConfig;

use super::kv::{KvCache, LayerKv};
use super::rope::Rope;
use super::weights::{Layer, LinearKind, Model};

/// Sees the input of every linear as the forward pass runs (activation capture for calibration,
/// importance matrices).
pub trait Observer {
    fn linear_input(&mut self, layer: usize, kind: LinearKind, x: &[f32], n_tok: usize);
}

/// What a block needs besides its weights.
pub struct BlockCtx<'a> {
    pub config: &'a LlamaConfig,
    pub rope: &'a Rope,
}

impl Layer {
    /// Runs this block on `n_tok` new tokens in `x` (n_tok × hidden, updated in place), whose
    /// positions follow those already in `kv`.
    pub fn forward(
        &self,
        ctx: &BlockCtx,
        index: usize,
        x: &mut [f32],
        n_tok: usize,
        kv: &mut LayerKv,
        mut obs: Option<&mut dyn Observer>,
    ) {
        let cfg = ctx.config;
        let eps = cfg.rms_norm_eps as f32;
        let mut see = |kind: LinearKind, a: &[f32]| {
            if let Some(o) = obs.as_mut() {
                o.linear_input(index, kind, a, n_tok);
            }
        };

        let mut s = SCRATCH.take();
        let Scratch {
            h,
            q,
            k,
            v,
            attn,
            out,
            g,
            u,
        } = &mut s;
        h.resize(x.len(), 0.0);
        rms_norm(x, &self.attn_norm, eps, h);
        for kind in [LinearKind::Q, LinearKind::K, LinearKind::V] {
            see(kind, h);
        }
        self.q.forward_into(h, n_tok, q);
        self.k.forward_into(h, n_tok, k);
        self.v.forward_into(h, n_tok, v);
        let pos0 = kv.len;
        ctx.rope.apply_batch(q, k, n_tok, pos0);
        kv.append(k, v);
        let shape = AttnShape {
            n_head: cfg.num_attention_heads,
            n_kv_head: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        };
        attn.resize(q.len(), 0.0);
        causal_attention(shape, q, n_tok, pos0, &kv.k, &kv.v, attn);
        see(LinearKind::O, attn);
        self.o.forward_into(attn, n_tok, out);
        add_assign(x, out);

        rms_norm(x, &self.ffn_norm, eps, h);
        see(LinearKind::Gate, h);
        see(LinearKind::Up, h);
        self.gate.forward_into(h, n_tok, g);
        self.up.forward_into(h, n_tok, u);
        swiglu(g, u);
        see(LinearKind::Down, g);
        self.down.forward_into(g, n_tok, out);
        add_assign(x, out);
        SCRATCH.set(s);
    }
}

/// One thread's buffers for the activations inside a block, kept between passes: a prompt
/// batch's are megabytes each, and fresh allocations that large come from the kernel a page at
/// a time on every pass. (A pass started from inside another, e.g. by an observer, takes the
/// buffers while the outer one holds none, so nesting stays correct.)
#[derive(Default)]
struct Scratch {
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    out: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl Model {
    pub fn block_ctx(&self) -> BlockCtx<'_> {
        BlockCtx {
            config: &self.config,
            rope: &self.rope,
        }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.layers.len(),
            self.config.num_key_value_heads * self.config.head_dim,
        )
    }

    /// Embedding rows of `tokens` (n_tok × hidden). Ids outside the vocabulary panic: callers
    /// validate tokens (the tokenizer never produces them).
    pub fn embed_tokens(&self, tokens: &[u32]) -> Vec<f32> {
        let d = self.config.hidden_size;
        let mut x = vec![0f32; tokens.len() * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            assert!(
                (t as usize) < self.embed.rows(),
                "token id {t} outside the vocabulary"
            );
            self.embed.dequantize_row(t as usize, row);
        }
        x
    }

    /// Final norm and LM head over the hidden states of `n_tok` tokens.
    pub fn logits(&self, x: &[f32], n_tok: usize) -> Vec<f32> {
        let mut h = vec![0f32; x.len()];
        rms_norm(
            x,
            &self.output_norm,
            self.config.rms_norm_eps as f32,
            &mut h,
        );
        let mut y = vec![0f32; n_tok * self.output.rows()];
        self.output.matmul(&h, n_tok, &mut y);
        y
    }

    /// Runs `tokens` after what `cache` holds and returns the logits of the tokens from index
    /// `logits_from` on ((n_tok − logits_from) × vocab).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits_from: usize) -> Vec<f32> {
        self.forward_observed(tokens, cache, logits_from, None)
    }

    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
        mut obs: Option<&mut dyn Observer>,
    ) -> Vec<f32> {
        let n_tok = tokens.len();
        assert!(logits_from <= n_tok);
        let mut x = self.embed_tokens(tokens);
        let ctx = self.block_ctx();
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            layer.forward(
                &ctx,
                i,
                &mut x,
                n_tok,
                kv,
                obs.as_mut().map(|o| &mut **o as &mut dyn Observer),
            );
        }
        let d = self.config.hidden_size;
        self.logits(&x[logits_from * d..], n_tok - logits_from)
    }
}
