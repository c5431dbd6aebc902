"""Independent reference forward pass for llama-architecture GGUF files, in float64 NumPy.

Shares no code with the Rust runtime: weights are decoded by gguf-py (llama.cpp's own Python
package), and the graph follows the Hugging Face Llama definition. It exists to test the runtime.

usage: llama_ref.py MODEL.gguf TOKENS.json OUT.json
  TOKENS.json: [[id, ...], ...]  (one list per prompt)
  OUT.json:    [[[logit, ...] per position] per prompt]  (float64 logits of every position)
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def main():
    path, tokens_path, out_path = sys.argv[1:4]
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

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)

    def rope(x, pos):  # x: [T, H, hd], rotate-half
        ang = pos[:, None] * inv_freq[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    results = []
    for toks in json.load(open(tokens_path)):
        T = len(toks)
        pos = np.arange(T, dtype=np.float64)
        x = emb[np.array(toks)]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for L in layers:
            h = rms(x, L["an"])
            q = rope((h @ L["q"].T).reshape(T, n_head, hd), pos)
            k = rope((h @ L["k"].T).reshape(T, n_kv, hd), pos)
            v = (h @ L["v"].T).reshape(T, n_kv, hd)
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
        results.append((rms(x, norm) @ out_w.T).tolist())
    json.dump(results, open(out_path, "w"))


if __name__ == "__main__":
    main()
