"""Every quantized linear's input and output inside Hugging Face transformers with
compressed-tensors (CPU, float32, activation fake-quantization on) for one prompt: lets a test
feed the very same inputs to its own matrices and compare outputs linear by linear, free of the
divergence that discontinuous activation rounding amplifies through 30 layers.

usage: ct_linears.py MODEL_DIR TOKENS.json OUT_DIR
  TOKENS.json: [id, ...];  OUT_DIR/index.json: [{"layer", "module", "n_tok", "cols", "rows"}],
  OUT_DIR/<layer>.<module>.in / .out: little-endian float32, row-major (tokens × features).
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def main():
    model_dir, tokens_path, out_dir = sys.argv[1:4]
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    index = []

    def hook(layer, name):
        def f(mod, inp, out):
            x, y = inp[0][0].contiguous(), out[0].contiguous()
            x.numpy().astype("<f4").tofile(os.path.join(out_dir, f"{layer}.{name}.in"))
            y.numpy().astype("<f4").tofile(os.path.join(out_dir, f"{layer}.{name}.out"))
            index.append({"layer": layer, "module": name, "n_tok": x.shape[0],
                          "cols": x.shape[1], "rows": y.shape[1]})
        return f

    for i, layer in enumerate(model.model.layers):
        for name in MODULES:
            model.get_submodule(f"model.layers.{i}.{name}").register_forward_hook(hook(i, name))
    with torch.no_grad():
        model(torch.tensor([json.load(open(tokens_path))]))
    json.dump(index, open(os.path.join(out_dir, "index.json"), "w"))


if __name__ == "__main__":
    main()
