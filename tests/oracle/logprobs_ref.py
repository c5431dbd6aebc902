"""Per-token log-probabilities of token sequences under the float64 reference forward pass
(llama_ref.py), for checking perplexity and log-likelihood scoring without shipping full logits.

usage: logprobs_ref.py MODEL SEQUENCES.json OUT.json
  SEQUENCES.json: [[id, ...], ...]
  OUT.json:       [{"logprob": [log p(t_i | t_<i) for i >= 1], "greedy": [argmax == t_i for i >= 1]}, ...]
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402


def main():
    path, seq_path, out_path = sys.argv[1:4]
    M = llama_ref.load(path)
    out = []
    for toks in json.load(open(seq_path)):
        logits = llama_ref.forward(M, toks[:-1])
        m = logits.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
        nxt = np.array(toks[1:])
        lp = logits[np.arange(len(nxt)), nxt] - lse
        out.append({"logprob": lp.tolist(), "greedy": (logits.argmax(-1) == nxt).tolist()})
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
