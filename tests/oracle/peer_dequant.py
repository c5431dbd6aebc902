"""Dequantized weights of a GPTQ or AWQ folder as the peers' own code computes them: the folder is
loaded by GPTQModel (its loader reads config.json / quantize_config.json and the safetensors,
converts GPTQ v1 zero points, builds its torch CPU modules), then each quantized module is
dequantized by the peer's code: TorchQuantLinear.dequantize_weight (GPTQ) or AutoAWQ's
dequantize_gemm (vendored in gptqmodel.quantization.awq) for AWQ. Needs torch + gptqmodel.

usage: peer_dequant.py FOLDER OUT_DIR
  writes OUT_DIR/<module name>.bin (out x in, float32 of the peer's values) and
  OUT_DIR/manifest.json: {name: {"rows", "cols", "dtype"}}
"""
import json
import os
import sys

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
import torch

torch.set_num_threads(2)


def main():
    folder, out_dir = sys.argv[1:3]
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm

    method = json.load(open(os.path.join(folder, "config.json")))["quantization_config"]["quant_method"]
    backend = BACKEND.TORCH if method == "gptq" else BACKEND.TORCH_AWQ
    # float16, the dtype the folders store scales in: in bfloat16 the peer would round the
    # scales before multiplying, which no runtime does.
    model = GPTQModel.load(folder, device="cpu", backend=backend, dtype=torch.float16)
    manifest = {}
    for name, m in model.model.named_modules():
        if not hasattr(m, "qweight"):
            continue
        if method == "gptq":
            w = m.dequantize_weight()
        else:
            w = dequantize_gemm(m.qweight, m.qzeros, m.scales, m.bits, m.group_size)
        w = w.detach().t()  # both peers return [in, out] (square matrices too)
        manifest[name] = {"rows": w.shape[0], "cols": w.shape[1], "dtype": str(w.dtype).replace("torch.", "")}
        w.to(torch.float32).contiguous().numpy().astype("<f4").tofile(os.path.join(out_dir, name + ".bin"))
    json.dump(manifest, open(os.path.join(out_dir, "manifest.json"), "w"))
    print(f"{len(manifest)} modules dequantized by {type(m).__name__ if manifest else '-'} ({method})")


if __name__ == "__main__":
    main()
