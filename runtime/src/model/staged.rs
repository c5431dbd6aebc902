//! One block's forward pass cut at every linear-input site, for the calibration pipeline: a
//! converter quantizes the linears of one site from the inputs the previous stage produced,
//! puts them back, and continues, so that each stage sees its quantized predecessors (GPTQ's
//! true-sequential order) at the cost of a single pass. Chained, the stages compute exactly
//! [`Layer::forward`] (tested bit for bit).

use kernels::attention::{causal_attention, AttnShape};
use kernels::attention_bf16::causal_self_attention;
use kernels::ops::{add_assign, rms_norm, swiglu};

use super::forward::BlockCtx;
use super::kv::LayerKv;
use super::weights::Layer;

/// Products a stage consumes at once (q, k, v, a residual's product, up's output), kept per
/// thread: the calibration runs every stage on thousands of equally long samples, and a fresh
/// buffer each time is zeroed afresh only to be overwritten.
#[derive(Default)]
struct Buffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    product: Vec<f32>,
    up: Vec<f32>,
}

thread_local! {
    static BUFFERS: std::cell::Cell<Buffers> = std::cell::Cell::new(Buffers::default());
}

/// Runs `f` with this thread's [`Buffers`] (empty ones if a caller up the stack holds them).
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    let mut b = BUFFERS.take();
    let r = f(&mut b);
    BUFFERS.set(b);
    r
}

fn attn_shape(ctx: &BlockCtx) -> AttnShape {
    AttnShape {
        n_head: ctx.config.num_attention_heads,
        n_kv_head: ctx.config.num_key_value_heads,
        head_dim: ctx.config.head_dim,
    }
}

impl Layer {
    /// The attention norm of the block input `x`: what q, k and v read.
    pub fn attn_input(&self, ctx: &BlockCtx, x: &[f32]) -> Vec<f32> {
        let mut h = vec![0f32; x.len()];
        rms_norm(x, &self.attn_norm, ctx.config.rms_norm_eps as f32, &mut h);
        h
    }

    /// q, k, v of the normed input `h` (n_tok tokens after those in `kv`), RoPE and causal
    /// attention: what o reads.
    pub fn attention(&self, ctx: &BlockCtx, h: &[f32], n_tok: usize, kv: &mut LayerKv) -> Vec<f32> {
        let pos0 = kv.len;
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        self.rotated_qkv(ctx, h, n_tok, pos0, [&mut q, &mut k, &mut v]);
        kv.append(&k, &v);
        let mut out = vec![0f32; q.len()];
        causal_attention(attn_shape(ctx), &q, n_tok, pos0, &kv.k, &kv.v, &mut out);
        out
    }

    /// [`Layer::attention`] of a whole sequence (positions 0..n_tok) as a bf16 model computes
    /// it on an accelerator ([`kernels::attention_bf16`]): the calibration pipeline's attention.
    pub fn sequence_attention_bf16(&self, ctx: &BlockCtx, h: &[f32], n_tok: usize) -> Vec<f32> {
        with_buffers(|b| {
            self.rotated_qkv(ctx, h, n_tok, 0, [&mut b.q, &mut b.k, &mut b.v]);
            let mut out = vec![0f32; b.q.len()];
            causal_self_attention(attn_shape(ctx), &b.q, &b.k, &b.v, n_tok, &mut out);
            out
        })
    }

    /// q, k (rotated for positions pos0..) and v of the normed input `h`, into `qkv`.
    fn rotated_qkv(
        &self,
        ctx: &BlockCtx,
        h: &[f32],
        n_tok: usize,
        pos0: usize,
        [q, k, v]: [&mut Vec<f32>; 3],
    ) {
        self.q.forward_into(h, n_tok, q);
        self.k.forward_into(h, n_tok, k);
        self.v.forward_into(h, n_tok, v);
        ctx.rope.apply_batch(q, k, n_tok, pos0);
    }

    /// x += o(attn).
    pub fn attn_residual(&self, x: &mut [f32], attn: &[f32], n_tok: usize) {
        with_buffers(|b| {
            self.o.forward_into(attn, n_tok, &mut b.product);
            add_assign(x, &b.product);
        })
    }

    /// The MLP norm of `x` (after the attention residual): what gate and up read.
    pub fn mlp_input(&self, ctx: &BlockCtx, x: &[f32]) -> Vec<f32> {
        let mut h = vec![0f32; x.len()];
        rms_norm(x, &self.ffn_norm, ctx.config.rms_norm_eps as f32, &mut h);
        h
    }

    /// silu(gate(h)) · up(h): what down reads.
    pub fn mlp_act(&self, h: &[f32], n_tok: usize) -> Vec<f32> {
        let mut g = self.gate.forward(h, n_tok);
        with_buffers(|b| {
            self.up.forward_into(h, n_tok, &mut b.up);
            swiglu(&mut g, &b.up);
        });
        g
    }

    /// x += down(act).
    pub fn mlp_residual(&self, x: &mut [f32], act: &[f32], n_tok: usize) {
        with_buffers(|b| {
            self.down.forward_into(act, n_tok, &mut b.product);
            add_assign(x, &b.product);
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::synthetic::SyntheticSpec;
    use crate::model::LayerKv;

    #[test]
    fn chained_stages_equal_the_block_forward() {
        let spec = SyntheticSpec {
            qkv_bias: true,
            ..SyntheticSpec::default()
        };
        let model = spec.build(5);
        let ctx = model.block_ctx();
        let width = spec.kv_heads * (spec.hidden / spec.heads);
        let x0 = model.embed_tokens(&[3, 1, 4, 1, 5, 9, 2]);
        for (i, layer) in model.layers.iter().enumerate() {
            let n = 7;
            let mut want = x0.clone();
            layer.forward(&ctx, i, &mut want, n, &mut LayerKv::new(width), None);
            let mut x = x0.clone();
            let h = layer.attn_input(&ctx, &x);
            let a = layer.attention(&ctx, &h, n, &mut LayerKv::new(width));
            layer.attn_residual(&mut x, &a, n);
            let h2 = layer.mlp_input(&ctx, &x);
            let act = layer.mlp_act(&h2, n);
            layer.mlp_residual(&mut x, &act, n);
            assert_eq!(x, want, "block {i}");
        }
    }
}
