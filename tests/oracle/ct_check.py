"""Independent check of a compressed-tensors folder written by `quantize fp8|int8`: recomputes
every checked linear's quantization from the base model's weights in float64 NumPy, from the
formats' definitions (E4M3 by nearest-value search over its 256 codes, ties to even; int8 by
round-half-even) applied to the quotient w/scale as PyTorch computes it for a bf16 model (f32
division, rounded to bf16), and compares bytes. Also compares config.json's quantization_config and block
0's tensor names, dtypes and shapes with what llm-compressor 0.14 wrote for the same scheme on the
same model (tests/fixtures/llm_compressor/smollm2_formats.json).

usage: ct_check.py BASE_DIR OUT_DIR SCHEME LAYERS
  SCHEME: fp8_dynamic | fp8_static | fp8_block | w8a8 | w8a8_smoothed | w8a16
  LAYERS: comma-separated block indices
Prints one JSON object: {"checked": n_elements, "mismatches": n, "details": [...]}.
SmoothQuant folders (w8a8_smoothed) cannot be recomputed without the activations; for them the
check is the rounding bound the smoothing must keep: |q·s·γ'/γ − w| ≤ s/2·γ'/γ + 3·2⁻⁸·|w| per
element (a whole step at the clamp; 2⁻⁸ each for the norm, the smoothed weight and the quotient
rounded to bf16), with γ the base's norm weight and γ' the folder's.
"""
import json
import os
import struct
import sys

import numpy as np

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
FUSED = [LINEARS[0:3], LINEARS[3:4], LINEARS[4:6], LINEARS[6:7]]
BF16_EPS = 2.0 ** -7


class Folder:
    def __init__(self, d):
        self.tensors = {}
        for name in sorted(os.listdir(d)):
            if not name.endswith(".safetensors"):
                continue
            with open(os.path.join(d, name), "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(n))
                data = f.read()
            for k, v in header.items():
                if k != "__metadata__":
                    s, e = v["data_offsets"]
                    self.tensors[k] = (v["dtype"], v["shape"], data[s:e])
        self.config = json.load(open(os.path.join(d, "config.json")))

    def raw(self, name):
        return self.tensors[name]

    def floats(self, name):
        dtype, shape, b = self.tensors[name]
        if dtype == "BF16":
            v = (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            v = np.frombuffer(b, np.float16).astype(np.float32)
        elif dtype == "F32":
            v = np.frombuffer(b, np.float32)
        else:
            raise ValueError(f"{name}: {dtype} is not a float dtype")
        return v.astype(np.float64).reshape(shape)


def bf16_round(x):
    """float32 values rounded to bfloat16 (nearest, ties to even), as float64."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def scale(amax, divisor):
    """compressed-tensors' symmetric scale in bf16: amax/divisor in f32, rounded; 0 → eps."""
    s = bf16_round(np.float32(amax) / np.float32(divisor))
    return np.where(s == 0, BF16_EPS, s)


def e4m3_values():
    v = np.zeros(256)
    for c in range(256):
        e, m = (c >> 3) & 15, c & 7
        mag = m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
        v[c] = -mag if c & 0x80 else mag
    v[0x7F] = v[0xFF] = np.nan
    return v


E4M3 = e4m3_values()
MAGS = E4M3[:0x7F]  # codes 0..126, ascending


def e4m3_encode(y):
    """Nearest E4M3 code (ties to the even code), saturating at ±448."""
    a = np.minimum(np.abs(y), 448.0)
    hi = np.clip(np.searchsorted(MAGS, a), 1, 126)
    lo = hi - 1
    dlo, dhi = a - MAGS[lo], MAGS[hi] - a
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    return (code | (np.signbit(y) * 0x80)).astype(np.uint8)


def quotient(w, s):
    """w / s as PyTorch divides bf16 tensors: in float32, the result rounded to bfloat16."""
    return bf16_round(np.asarray(w, np.float32) / np.asarray(s, np.float32))


def expected(scheme, w, fused_amax):
    """(codes as bytes, scales) of a linear, from its float64 weight."""
    rows, cols = w.shape
    if scheme in ("fp8_dynamic", "fp8_static"):
        amax = np.abs(w).max(axis=1) if scheme == "fp8_dynamic" else np.array([fused_amax])
        s = scale(amax, 448.0)
        q = e4m3_encode(quotient(w, s[:, None] if scheme == "fp8_dynamic" else s[0]))
        return q.tobytes(), s
    if scheme == "fp8_block":
        nbr, nbc = -(-rows // 128), -(-cols // 128)
        s = np.zeros((nbr, nbc))
        for i in range(nbr):
            for j in range(nbc):
                s[i, j] = np.abs(w[128 * i:128 * (i + 1), 128 * j:128 * (j + 1)]).max()
        s = scale(s, 448.0)
        full = np.repeat(np.repeat(s, 128, 0), 128, 1)[:rows, :cols]
        return e4m3_encode(quotient(w, full)).tobytes(), s.reshape(-1)
    s = scale(np.abs(w).max(axis=1), 127.5)
    q = np.clip(np.round(quotient(w, s[:, None])), -128, 127).astype(np.int8)
    return q.tobytes(), s


def int8_codes(out, name, scheme, rows, cols):
    if scheme == "w8a16":
        dtype, shape, b = out.raw(name + ".weight_packed")
        assert dtype == "I32" and shape == [rows, -(-cols // 4)], (name, dtype, shape)
        u = np.frombuffer(b, np.uint8).reshape(rows, -1)[:, :cols]
        assert np.frombuffer(out.raw(name + ".weight_shape")[2], np.int64).tolist() == [rows, cols]
        return (u.astype(np.int16) - 128).astype(np.int8).tobytes()
    dtype, shape, b = out.raw(name + ".weight")
    assert shape == [rows, cols], (name, shape)
    return b


def main():
    base_dir, out_dir, scheme, layers = sys.argv[1:5]
    base, out = Folder(base_dir), Folder(out_dir)
    fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures", "llm_compressor",
                            "smollm2_formats.json")
    peer = json.load(open(fixtures))[scheme.replace("_smoothed", "")]
    details, checked, mismatches = [], 0, 0
    if out.config["quantization_config"] != peer["quantization_config"]:
        details.append("quantization_config differs from llm-compressor's")
        mismatches += 1
    ours = {k: [v[0], v[1]] for k, v in out.tensors.items() if k.startswith("model.layers.0.")}
    if ours != peer["layer0_tensors"]:
        diff = {k for k in set(ours) | set(peer["layer0_tensors"])
                if ours.get(k) != peer["layer0_tensors"].get(k)}
        details.append(f"block 0 tensors differ from llm-compressor's: {sorted(diff)[:6]}")
        mismatches += 1
    for i in map(int, layers.split(",")):
        p = f"model.layers.{i}."
        weights = {l: base.floats(p + l + ".weight") for l in LINEARS}
        for group in FUSED:
            fused_amax = max(np.abs(weights[l]).max() for l in group)
            for l in group:
                name, w = p + l, weights[l]
                rows, cols = w.shape
                if scheme == "w8a8_smoothed" and l not in ("self_attn.o_proj", "mlp.down_proj"):
                    norm = "input_layernorm" if l.startswith("self_attn") else "post_attention_layernorm"
                    g, g2 = base.floats(p + norm + ".weight"), out.floats(p + norm + ".weight")
                    ratio = np.where(g != 0, g2 / np.where(g != 0, g, 1), 0)
                    q = np.frombuffer(int8_codes(out, name, "w8a8", rows, cols), np.int8).reshape(rows, cols)
                    s = out.floats(name + ".weight_scale").reshape(rows, 1)
                    # Half a step, or a whole one where the bf16-rounded scale left the
                    # largest element just past 127.5 and the clamp took it.
                    steps = np.where((q == 127) | (q == -128), 1.0, 0.5)
                    err = np.abs(q * s * ratio - w) - steps * s * np.abs(ratio)
                    bad = int((err > 3 * 2.0 ** -8 * 1.01 * np.abs(w) + 1e-30).sum())
                    checked += w.size
                    mismatches += bad
                    if bad:
                        details.append(f"{name}: {bad} elements beyond half a step after unsmoothing")
                    if np.all(g2 == g):
                        details.append(f"{p + norm}: norm not smoothed")
                        mismatches += 1
                    continue
                kind = "w8a8" if scheme == "w8a8_smoothed" else scheme
                want_q, want_s = expected(kind, w, fused_amax)
                if kind.startswith("fp8"):
                    got_q = out.raw(name + ".weight")[2]
                else:
                    got_q = int8_codes(out, name, kind, rows, cols)
                got_s = out.floats(name + ".weight_scale").reshape(-1)
                diff = int((np.frombuffer(got_q, np.uint8) != np.frombuffer(want_q, np.uint8)).sum())
                sdiff = int((got_s != want_s).sum())
                checked += w.size + want_s.size
                mismatches += diff + sdiff
                if diff or sdiff:
                    details.append(f"{name}: {diff} codes and {sdiff} scales differ")
                if kind == "fp8_static":
                    s_in = out.floats(name + ".input_scale").reshape(-1)
                    first = out.floats(p + group[0] + ".input_scale").reshape(-1)
                    if not (s_in.size == 1 and np.isfinite(s_in[0]) and s_in[0] > 0 and s_in[0] == first[0]):
                        details.append(f"{name}: input_scale {s_in} not a positive scalar shared by {group}")
                        mismatches += 1
    print(json.dumps({"checked": checked, "mismatches": mismatches, "details": details[:20]}))


if __name__ == "__main__":
    main()
