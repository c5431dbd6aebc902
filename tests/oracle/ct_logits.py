"""Logits from Hugging Face transformers with compressed-tensors (CPU, float32) for a
compressed-tensors folder: the ecosystem's loader decompresses the quantized weights to dense and,
unless told not to, fake-quantizes each linear's input activations as compressed-tensors defines
them (its own scale conventions: int8 amax/127.5, FP8 amax/448).

usage: ct_logits.py MODEL_DIR TOKENS.json OUT.json [--no-act-quant]
  --no-act-quant: switch compressed-tensors' activation quantization off (quantization_enabled =
  False on every module), so only the decompressed weights differ from the base.
  TOKENS.json: [[id, ...], ...];  OUT.json: {"logits": [[[logit, ...] per position] per prompt],
  "activation_quantization": bool, "quantized_linears": n}
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, tokens_path, out_path = sys.argv[1:4]
    act_quant = "--no-act-quant" not in sys.argv[4:]
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    quantized = 0
    for m in model.modules():
        if getattr(m, "quantization_scheme", None) is not None:
            quantized += 1
            if not act_quant:
                m.quantization_enabled = False
    out = []
    with torch.no_grad():
        for toks in json.load(open(tokens_path)):
            logits = model(torch.tensor([toks])).logits[0]
            out.append(logits.double().tolist())
    json.dump(
        {"logits": out, "activation_quantization": act_quant, "quantized_linears": quantized},
        open(out_path, "w"),
    )


if __name__ == "__main__":
    main()
