"""Dequantizes raw ggml blocks with gguf-py (llama.cpp's own Python package): the oracle for the
Rust reference dequantizers.

usage: gguf_dequant.py CASES.json OUT_DIR
  CASES.json: [{"type": "Q4_K", "input": "path of raw block bytes", "output": "name"}, ...]
  writes OUT_DIR/<output> as little-endian float32
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize


def main():
    cases_path, out_dir = sys.argv[1:3]
    for c in json.load(open(cases_path)):
        qtype = GGMLQuantizationType[c["type"]]
        raw = np.fromfile(c["input"], dtype=np.uint8)
        values = dequantize(raw, qtype).astype("<f4")
        values.tofile(os.path.join(out_dir, c["output"]))


if __name__ == "__main__":
    main()
