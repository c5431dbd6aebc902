"""Logits from Hugging Face transformers (CPU, float32) for a model folder: the ecosystem's own
loader, used to check that folders this project writes load there and compute the same function.

usage: hf_logits.py MODEL_DIR TOKENS.json OUT.json
  TOKENS.json: [[id, ...], ...];  OUT.json: [[[logit, ...] per position] per prompt]
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, tokens_path, out_path = sys.argv[1:4]
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    out = []
    with torch.no_grad():
        for toks in json.load(open(tokens_path)):
            logits = model(torch.tensor([toks])).logits[0]
            out.append(logits.double().tolist())
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
