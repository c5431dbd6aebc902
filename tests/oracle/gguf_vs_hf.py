"""Checks a GGUF converted from a Hugging Face folder against the folder itself, the way
convert_hf_to_gguf.py defines the conversion: gguf-py (llama.cpp's own reader) decodes the GGUF,
the safetensors are parsed here from the format spec, and the expected tensors are computed with
NumPy (names mapped, shapes reversed, llama Q/K rows permuted with convert_hf_to_gguf's
reshape/swapaxes, norms and biases in F32, F16/BF16 weights rounded from float32). Metadata is
checked against config.json, tokenizer.json and tokenizer_config.json. Shares no code with the
Rust converter it tests.

usage: gguf_vs_hf.py MODEL.gguf HF_DIR   prints a JSON report: {"tensors": n, "keys": n,
"problems": [...]}
"""
import json
import math
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T


def read_safetensors(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        with open(os.path.join(folder, f), "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            data = fh.read()
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            raw = data[a:b]
            dt = info["dtype"]
            if dt == "BF16":
                arr = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            elif dt == "F16":
                arr = np.frombuffer(raw, "<f2").astype(np.float32)
            elif dt == "F32":
                arr = np.frombuffer(raw, "<f4")
            else:
                raise ValueError(f"{name}: dtype {dt}")
            out[name] = (arr.reshape(info["shape"]), dt)
    return out


LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")
    assert parts[:2] == ["model", "layers"], hf
    module, suffix = ".".join(parts[3:-1]), parts[-1]
    return f"blk.{parts[2]}.{LAYER[module]}.{suffix}"


def permute(w, n_head):
    # convert_hf_to_gguf's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def bf16_round(x):
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return (b.astype(np.uint32) << 16).view(np.float32)


def decode(t):
    raw = np.asarray(t.data)
    if t.tensor_type == T.F32:
        return raw.astype(np.float32).ravel()
    if t.tensor_type == T.F16:
        return raw.view(np.float16).astype(np.float32).ravel()
    if t.tensor_type == T.BF16:
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).ravel()
    raise ValueError(f"{t.name}: type {t.tensor_type.name} is not a dense type")


def main():
    gguf_path, folder = sys.argv[1:3]
    r = GGUFReader(gguf_path)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    problems = []
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    arch = "qwen2" if cfg["model_type"] == "qwen2" else "llama"
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    hd = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    expect = {
        "general.architecture": arch,
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],
        f"{arch}.attention.head_count": n_head,
        f"{arch}.attention.head_count_kv": n_kv,
        f"{arch}.context_length": cfg["max_position_embeddings"],
    }
    if arch == "llama":
        expect[f"{arch}.vocab_size"] = cfg["vocab_size"]
        expect[f"{arch}.rope.dimension_count"] = hd
    for k, v in expect.items():
        if fields.get(k) != v:
            problems.append(f"metadata {k}: {fields.get(k)!r}, expected {v!r}")
    for k, v in [(f"{arch}.rope.freq_base", cfg.get("rope_theta", 10000.0)),
                 (f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])]:
        if not math.isclose(fields.get(k, float("nan")), v, rel_tol=1e-6):
            problems.append(f"metadata {k}: {fields.get(k)!r}, expected {v!r}")
    if fields.get("general.quantization_version") != 2:
        problems.append("metadata general.quantization_version is not 2")

    # tokenizer: gpt2 BPE from tokenizer.json
    tj = json.load(open(os.path.join(folder, "tokenizer.json")))
    tc_path = os.path.join(folder, "tokenizer_config.json")
    tc = json.load(open(tc_path)) if os.path.exists(tc_path) else {}
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    want_tokens = [by_id.get(i, f"[PAD{i}]") for i in range(cfg["vocab_size"])]
    want_types = [(3 if added[i]["special"] else 4) if i in added else (1 if i in by_id else 5)
                  for i in range(cfg["vocab_size"])]
    if fields.get("tokenizer.ggml.model") != "gpt2":
        problems.append(f"tokenizer.ggml.model {fields.get('tokenizer.ggml.model')!r}")
    if fields.get("tokenizer.ggml.tokens") != want_tokens:
        problems.append("tokenizer.ggml.tokens differ from tokenizer.json's vocabulary")
    if list(fields.get("tokenizer.ggml.token_type", [])) != want_types:
        problems.append("tokenizer.ggml.token_type differ")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    if fields.get("tokenizer.ggml.merges") != merges:
        problems.append("tokenizer.ggml.merges differ")
    content_id = {a["content"]: a["id"] for a in tj.get("added_tokens", [])}
    for kind, key in [("bos", "bos_token_id"), ("eos", "eos_token_id")]:
        want = content_id.get(tc.get(f"{kind}_token"), cfg.get(f"{kind}_token_id"))
        if want is not None and fields.get(f"tokenizer.ggml.{key}") != want:
            problems.append(f"tokenizer.ggml.{key}: {fields.get(f'tokenizer.ggml.{key}')!r}, expected {want}")
    if "add_bos_token" in tc and fields.get("tokenizer.ggml.add_bos_token") != tc["add_bos_token"]:
        problems.append("tokenizer.ggml.add_bos_token differs from tokenizer_config.json")
    if "chat_template" in tc and fields.get("tokenizer.chat_template") != tc["chat_template"]:
        problems.append("tokenizer.chat_template differs from tokenizer_config.json")

    # tensors
    got = {t.name: t for t in r.tensors}
    st = read_safetensors(folder)
    seen = set()
    for hf, (w, dt) in st.items():
        name = gguf_name(hf)
        seen.add(name)
        t = got.get(name)
        if t is None:
            problems.append(f"{name} (from {hf}): missing")
            continue
        if [int(d) for d in t.shape] != list(reversed(w.shape)):
            problems.append(f"{name}: dims {list(t.shape)}, expected {list(reversed(w.shape))}")
            continue
        x = w.astype(np.float32)
        stem = name.rsplit(".", 1)[0]
        if arch == "llama" and stem.endswith(".attn_q"):
            x = permute(x, n_head)
        elif arch == "llama" and stem.endswith(".attn_k"):
            x = permute(x, n_kv)
        vector = w.ndim == 1 or name.endswith("_norm.weight") or not name.endswith(".weight")
        if vector and t.tensor_type != T.F32:
            problems.append(f"{name}: {t.tensor_type.name}, expected F32")
            continue
        if t.tensor_type == T.F16:
            x = x.astype(np.float16).astype(np.float32)
        elif t.tensor_type == T.BF16:
            x = bf16_round(x)
        elif t.tensor_type != T.F32:
            problems.append(f"{name}: {t.tensor_type.name}, expected a dense type")
            continue
        y = decode(t)
        if not np.array_equal(y.view(np.uint32), x.ravel().view(np.uint32)):
            bad = int((y != x.ravel()).sum())
            problems.append(f"{name}: {bad} of {y.size} values differ")
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type") == "llama3":
        seen.add("rope_freqs.weight")
        inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        old = rs["original_max_position_embeddings"]
        want = []
        for f in inv:
            wl = 2 * math.pi / f
            if wl < old / rs["high_freq_factor"]:
                want.append(1.0)
            elif wl > old / rs["low_freq_factor"]:
                want.append(rs["factor"])
            else:
                s = (old / wl - rs["low_freq_factor"]) / (rs["high_freq_factor"] - rs["low_freq_factor"])
                want.append(1 / ((1 - s) / rs["factor"] + s))
        t = got.get("rope_freqs.weight")
        if t is None:
            problems.append("rope_freqs.weight: missing for llama3 RoPE scaling")
        elif not np.allclose(decode(t), np.array(want), rtol=1e-6):
            problems.append("rope_freqs.weight: factors differ")
    for extra in set(got) - seen:
        problems.append(f"{extra}: not from the folder")
    print(json.dumps({"tensors": len(got), "keys": len(fields), "problems": problems}))


if __name__ == "__main__":
    main()
