"""Dequantizes linears of a GPTQ or AWQ folder with NumPy, written from the published layouts
(anchors.md A1/A2; AutoGPTQ's bit stream, AutoAWQ's nibble order), to check the packers and the
runtime's loaders against the formats themselves. Reads safetensors directly (no torch).

usage: int4_unpack.py FOLDER CASES.json OUT_DIR
  case: {"name": "model.layers.0.self_attn.q_proj", "format": "gptq"|"awq", "bits", "group_size",
         "rows", "cols", "out": "file"}  -> writes rows x cols float32 (little-endian) per case
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"I32": np.int32, "F16": np.float16, "BF16": None, "F32": np.float32}
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def unpack_stream(words, bits, n):
    """Values of `bits` bits laid end to end in little-endian 32-bit words (value k at bit bits*k)."""
    b = np.unpackbits(words.astype("<u4").view(np.uint8), bitorder="little")
    b = b[: n * bits].reshape(n, bits).astype(np.int64)
    return b @ (1 << np.arange(bits))


def gptq(t, name, bits, g, rows, cols):
    qweight, qzeros = t[name + ".qweight"], t[name + ".qzeros"]
    scales = t[name + ".scales"].astype(np.float32)
    g_idx = t[name + ".g_idx"].astype(np.int64)
    q = np.stack([unpack_stream(qweight[:, r], bits, cols) for r in range(rows)])  # rows x cols
    z = np.stack([unpack_stream(qzeros[i], bits, rows) for i in range(qzeros.shape[0])]) + 1
    s = scales[g_idx].T  # rows x cols
    zz = z[g_idx].T
    return s * (q - zz).astype(np.float32)


def awq(t, name, g, rows, cols):
    qweight, qzeros = t[name + ".qweight"].view(np.uint32), t[name + ".qzeros"].view(np.uint32)
    scales = t[name + ".scales"].astype(np.float32)
    shifts = np.arange(0, 32, 4, dtype=np.uint32)

    def nibbles(w):
        v = (w[:, :, None] >> shifts[None, None, :]) & 15
        v = v.reshape(w.shape[0], -1)
        order = np.arange(v.shape[1]).reshape(-1, 8)[:, AWQ_REVERSE_ORDER].reshape(-1)
        return v[:, order].astype(np.int64)

    q = nibbles(qweight)  # cols x rows
    z = nibbles(qzeros)  # groups x rows
    grp = np.arange(cols) // g
    w = scales[grp] * (q - z[grp]).astype(np.float32)  # cols x rows
    return w.T


def main():
    folder, cases_path, out_dir = sys.argv[1:4]
    t = read_safetensors(folder + "/model.safetensors")
    for c in json.load(open(cases_path)):
        if c["format"] == "gptq":
            w = gptq(t, c["name"], c["bits"], c["group_size"], c["rows"], c["cols"])
        else:
            w = awq(t, c["name"], c["group_size"], c["rows"], c["cols"])
        np.ascontiguousarray(w, dtype="<f4").tofile(out_dir + "/" + c["out"])


if __name__ == "__main__":
    main()
