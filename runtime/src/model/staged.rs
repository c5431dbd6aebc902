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
use super::weights::{Layer, Linear, LinearKind};

/// The linear-input sites of a block in the order its forward pass reaches them, each named by
/// the first linear that reads it (k and v read q's input, up reads gate's).
pub const SITES: [LinearKind; 4] = [
    LinearKind::Q,
    LinearKind::O,
    LinearKind::Gate,
    LinearKind::Down,
];

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
    /// The stages of [`Layer::calibration_pass`]: a norm's output, attention, gate's output.
    normed: Vec<f32>,
    attn: Vec<f32>,
    act: Vec<f32>,
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

/// `out` ← RMSNorm(x) with `w` (resized to x; every element overwritten).
fn norm_into(ctx: &BlockCtx, x: &[f32], w: &[f32], out: &mut Vec<f32>) {
    out.resize(x.len(), 0.0);
    rms_norm(x, w, ctx.config.rms_norm_eps as f32, out);
}

/// x += lin(input), the product in `product`.
fn add_product(lin: &Linear, x: &mut [f32], input: &[f32], n_tok: usize, product: &mut Vec<f32>) {
    lin.forward_into(input, n_tok, product);
    add_assign(x, product);
}

impl Layer {
    /// The attention norm of the block input `x`: what q, k and v read.
    pub fn attn_input(&self, ctx: &BlockCtx, x: &[f32]) -> Vec<f32> {
        let mut h = Vec::new();
        norm_into(ctx, x, &self.attn_norm, &mut h);
        h
    }

    /// One whole sequence (positions 0..n_tok) through the block as the chained stages compute
    /// it (bf16 attention; the linears as they are), with every product in this thread's
    /// buffers: `see(site, input)` is called at each of [`SITES`] up to and including
    /// `stop_after`. With `stop_after` = down, `x` becomes the block's output; an earlier site
    /// leaves the stages after it undone (for a last block whose outputs nothing reads).
    pub fn calibration_pass(
        &self,
        ctx: &BlockCtx,
        x: &mut [f32],
        n_tok: usize,
        stop_after: LinearKind,
        mut see: impl FnMut(LinearKind, &[f32]),
    ) {
        with_buffers(|b| {
            norm_into(ctx, x, &self.attn_norm, &mut b.normed);
            see(LinearKind::Q, &b.normed);
            if stop_after == LinearKind::Q {
                return;
            }
            let qkv = [&mut b.q, &mut b.k, &mut b.v];
            self.attention_bf16_into(ctx, &b.normed, n_tok, qkv, &mut b.attn);
            see(LinearKind::O, &b.attn);
            if stop_after == LinearKind::O {
                return;
            }
            add_product(&self.o, x, &b.attn, n_tok, &mut b.product);
            norm_into(ctx, x, &self.ffn_norm, &mut b.normed);
            see(LinearKind::Gate, &b.normed);
            if stop_after == LinearKind::Gate {
                return;
            }
            self.mlp_act_into(&b.normed, n_tok, &mut b.up, &mut b.act);
            see(LinearKind::Down, &b.act);
            add_product(&self.down, x, &b.act, n_tok, &mut b.product);
        })
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
        let mut out = Vec::new();
        with_buffers(|b| {
            self.attention_bf16_into(ctx, h, n_tok, [&mut b.q, &mut b.k, &mut b.v], &mut out)
        });
        out
    }

    /// [`Layer::sequence_attention_bf16`] into `out`, with q, k and v in `qkv`.
    fn attention_bf16_into(
        &self,
        ctx: &BlockCtx,
        h: &[f32],
        n_tok: usize,
        [q, k, v]: [&mut Vec<f32>; 3],
        out: &mut Vec<f32>,
    ) {
        self.rotated_qkv(ctx, h, n_tok, 0, [q, k, v]);
        out.resize(q.len(), 0.0);
        causal_self_attention(attn_shape(ctx), q, k, v, n_tok, out);
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
        with_buffers(|b| add_product(&self.o, x, attn, n_tok, &mut b.product))
    }

    /// The MLP norm of `x` (after the attention residual): what gate and up read.
    pub fn mlp_input(&self, ctx: &BlockCtx, x: &[f32]) -> Vec<f32> {
        let mut h = Vec::new();
        norm_into(ctx, x, &self.ffn_norm, &mut h);
        h
    }

    /// silu(gate(h)) · up(h): what down reads.
    pub fn mlp_act(&self, h: &[f32], n_tok: usize) -> Vec<f32> {
        let mut g = Vec::new();
        with_buffers(|b| self.mlp_act_into(h, n_tok, &mut b.up, &mut g));
        g
    }

    /// [`Layer::mlp_act`] into `out`, with up's output in `up`.
    fn mlp_act_into(&self, h: &[f32], n_tok: usize, up: &mut Vec<f32>, out: &mut Vec<f32>) {
        self.gate.forward_into(h, n_tok, out);
        self.up.forward_into(h, n_tok, up);
        swiglu(out, up);
    }

    /// x += down(act).
    pub fn mlp_residual(&self, x: &mut [f32], act: &[f32], n_tok: usize) {
        with_buffers(|b| add_product(&self.down, x, act, n_tok, &mut b.product))
    }
}

#[cfg(test)]
mod tests {
    use super::SITES;
    use crate::model::synthetic::SyntheticSpec;
    use crate::model::{LayerKv, LinearKind};

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

    #[test]
    fn the_calibration_pass_equals_the_chained_bf16_stages() {
        let spec = SyntheticSpec {
            qkv_bias: true,
            ..SyntheticSpec::default()
        };
        let model = spec.build(6);
        let ctx = model.block_ctx();
        let n = 9;
        let x0 = model.embed_tokens(&[2, 7, 1, 8, 2, 8, 1, 8, 2]);
        for layer in &model.layers {
            let mut want = vec![x0.clone()];
            let mut x = x0.clone();
            let h = layer.attn_input(&ctx, &x);
            let a = layer.sequence_attention_bf16(&ctx, &h, n);
            layer.attn_residual(&mut x, &a, n);
            let h2 = layer.mlp_input(&ctx, &x);
            let act = layer.mlp_act(&h2, n);
            let after_attn = x.clone();
            layer.mlp_residual(&mut x, &act, n);
            want.push(x);
            for (stop, inputs, out) in [
                (LinearKind::Down, vec![&h, &a, &h2, &act], &want[1]),
                (LinearKind::Gate, vec![&h, &a, &h2], &after_attn),
                (LinearKind::Q, vec![&h], &want[0]),
            ] {
                let mut seen = Vec::new();
                let mut y = x0.clone();
                layer.calibration_pass(&ctx, &mut y, n, stop, |kind, input| {
                    seen.push((kind, input.to_vec()))
                });
                let kinds: Vec<_> = seen.iter().map(|(k, _)| *k).collect();
                assert_eq!(kinds, SITES[..inputs.len()], "sites up to {stop:?}");
                for ((_, got), want) in seen.iter().zip(&inputs) {
                    assert_eq!(got, *want, "{stop:?}");
                }
                assert_eq!(&y, out, "hidden state after {stop:?}");
            }
        }
    }
}
