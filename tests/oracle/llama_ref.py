"""Independent reference forward pass for Llama-family models, in float64 NumPy.

Reads llama-architecture GGUF files (weights decoded by gguf-py, llama.cpp's own Python package)
and Hugging Face folders (llama, mistral, qwen2: safetensors parsed here from the format spec,
single or sharded, f32/f16/bf16; qkv biases; tied or untied head; llama3 RoPE scaling). The graph
follows the Hugging Face definition. Shares no code with the Rust runtime it tests.

usage: llama_ref.py MODEL TOKENS.json OUT.json
  MODEL:       a .gguf file or a folder with config.json
  TOKENS.json: [[id, ...], ...]  (one list per prompt)
  OUT.json:    [[[logit, ...] per position] per prompt]  (float64 logits of every position)
"""
import json
import math
import os
import struct
import sys

import numpy as np


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def load_gguf(path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    assert arch == "llama", f"reference supports llama only, got {arch}"
    d = field(r, f"{arch}.embedding_length")
    n_layer = field(r, f"{arch}.block_count")
    n_head = field(r, f"{arch}.attention.head_count")
    n_kv = field(r, f"{arch}.attention.head_count_kv", n_head)
    eps = field(r, f"{arch}.attention.layer_norm_rms_epsilon")
    theta = field(r, f"{arch}.rope.freq_base", 10000.0)
    hd = d // n_head

    tensors = {t.name: t for t in r.tensors}

    def W(name):
        t = tensors[name]
        shape = [int(x) for x in reversed(t.shape.tolist())]  # HF order: [rows, cols]
        return dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)

    def unpermute(w, heads):
        # llama.cpp stores q/k rows interleaved for adjacent-pair RoPE; undo it to rotate-half.
        rows, cols = w.shape
        return w.reshape(heads, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)

    emb = W("token_embd.weight")
    out_w = W("output.weight") if "output.weight" in tensors else emb
    layers = []
    for i in range(n_layer):
        p = f"blk.{i}."
        layers.append(dict(
            an=W(p + "attn_norm.weight"), fn=W(p + "ffn_norm.weight"),
            q=unpermute(W(p + "attn_q.weight"), n_head), k=unpermute(W(p + "attn_k.weight"), n_kv),
            v=W(p + "attn_v.weight"), o=W(p + "attn_output.weight"),
            g=W(p + "ffn_gate.weight"), u=W(p + "ffn_up.weight"), dn=W(p + "ffn_down.weight"),
        ))
    norm = W("output_norm.weight")
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    for L in layers:
        L.update(qb=None, kb=None, vb=None)
    return dict(emb=emb, out=out_w, layers=layers, norm=norm, eps=eps, n_head=n_head, n_kv=n_kv,
                hd=hd, inv_freq=inv_freq)


def read_safetensors(path):
    """{name: float64 array} from one safetensors file (8-byte header length, JSON, data)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        else:
            raise ValueError(f"{path}: {name}: dtype {info['dtype']} not supported by the reference")
        out[name] = arr.astype(np.float64).reshape(info["shape"])
    return out


def llama3_inv_freq(inv_freq, s):
    old = s["original_max_position_embeddings"]
    low, high, factor = s["low_freq_factor"], s["high_freq_factor"], s["factor"]
    out = []
    for f in inv_freq:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(f)
        elif wavelen > old / low:
            out.append(f / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


def load_hf(path):
    cfg = json.load(open(os.path.join(path, "config.json")))
    assert cfg["model_type"] in ("llama", "mistral", "qwen2"), cfg["model_type"]
    index = os.path.join(path, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    T = {}
    for f in files:
        T.update(read_safetensors(os.path.join(path, f)))
    d, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    hd = cfg.get("head_dim") or d // n_head
    theta = cfg.get("rope_theta", 10000.0)
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        inv_freq = llama3_inv_freq(inv_freq, rs)
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        layers.append(dict(
            an=T[p + "input_layernorm.weight"], fn=T[p + "post_attention_layernorm.weight"],
            q=T[a + "q_proj.weight"], k=T[a + "k_proj.weight"], v=T[a + "v_proj.weight"],
            o=T[a + "o_proj.weight"], g=T[p + "mlp.gate_proj.weight"], u=T[p + "mlp.up_proj.weight"],
            dn=T[p + "mlp.down_proj.weight"],
            qb=T.get(a + "q_proj.bias"), kb=T.get(a + "k_proj.bias"), vb=T.get(a + "v_proj.bias"),
        ))
    emb = T["model.embed_tokens.weight"]
    out_w = emb if cfg.get("tie_word_embeddings") or "lm_head.weight" not in T else T["lm_head.weight"]
    return dict(emb=emb, out=out_w, layers=layers, norm=T["model.norm.weight"], eps=cfg.get("rms_norm_eps", 1e-6),
                n_head=n_head, n_kv=n_kv, hd=hd, inv_freq=inv_freq)


def load(path):
    return load_hf(path) if os.path.isdir(path) else load_gguf(path)


def forward(M, toks):
    """float64 logits [len(toks), vocab] of one sequence."""
    emb, out_w, layers, norm, eps = M["emb"], M["out"], M["layers"], M["norm"], M["eps"]
    n_head, n_kv, hd, inv_freq = M["n_head"], M["n_kv"], M["hd"], M["inv_freq"]

    def lin(x, w, b):
        y = x @ w.T
        return y if b is None else y + b

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x, pos):  # x: [T, H, hd], rotate-half
        ang = pos[:, None] * inv_freq[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    T = len(toks)
    pos = np.arange(T, dtype=np.float64)
    x = emb[np.array(toks)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for L in layers:
        h = rms(x, L["an"])
        q = rope(lin(h, L["q"], L["qb"]).reshape(T, n_head, hd), pos)
        k = rope(lin(h, L["k"], L["kb"]).reshape(T, n_kv, hd), pos)
        v = lin(h, L["v"], L["vb"]).reshape(T, n_kv, hd)
        rep = n_head // n_kv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = np.einsum("hts,shd->thd", s, v).reshape(T, n_head * hd)
        x = x + a @ L["o"].T
        h = rms(x, L["fn"])
        g = h @ L["g"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ L["u"].T)) @ L["dn"].T
    return rms(x, norm) @ out_w.T


def main():
    path, tokens_path, out_path = sys.argv[1:4]
    M = load(path)
    results = [forward(M, toks).tolist() for toks in json.load(open(tokens_path))]
    json.dump(results, open(out_path, "w"))


if __name__ == "__main__":
    main()
