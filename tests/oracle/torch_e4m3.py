"""PyTorch's float8_e4m3fn cast of every f16 bit pattern, after clamping to ±448 (the saturating
conversion compressed-tensors and vLLM apply; torch's bare cast turns |x| ≥ 464 into NaN).

usage: torch_e4m3.py OUT.bin   (65,536 bytes: the code of f16 pattern i at offset i)
"""
import sys

import torch

x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
codes = x.clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
open(sys.argv[1], "wb").write(codes.numpy().tobytes())
