"""GPTQ in float64 NumPy, written from the published algorithm (IST-DASLab gptq.py fasterquant and
quant.py), as the oracle of quant::gptq. It follows gptq.py line by line except for the choices
quant::gptq documents, which it makes too:
  - scales are rounded to float16 when a group is fitted;
  - a group starting inside a block is fitted on the block's error-updated weights (W1);
  - symmetric groups without negative weights still get the range +-max|w|;
  - asymmetric zero points are at least 1 (GPTQ v1 files store zero - 1).
U = chol(H^-1)^T comes from numpy.linalg (inv + cholesky), not from the Rust factorization.

usage: gptq_ref.py CASES.json OUT.json
  each case: {"w": [[...]], "h": [[...]], "bits", "group_size", "sym", "act_order",
              "static_groups", "damp", "block_size"}
  out: [{"codes": [[...]], "scales": [[...]] (groups x rows), "zeros": [[...]], "g_idx": [...]}]
"""
import json
import sys

import numpy as np


def f16(x):
    s = np.float64(np.float16(x))
    return max(s, 2.0 ** -24)


def fit(x, bits, sym):
    """quant.py find_params for one group of one row (x: 1-D)."""
    maxq = 2 ** bits - 1
    xmin = min(x.min(), 0.0)
    xmax = max(x.max(), 0.0)
    if sym:
        xmax = max(abs(xmin), xmax)
        xmin = -xmax
    if xmin == 0 and xmax == 0:
        xmin, xmax = -1.0, 1.0
    scale = f16((xmax - xmin) / maxq)
    if sym:
        zero = (maxq + 1) / 2
    else:
        zero = np.round(-xmin / scale)
        if zero < 1:
            zero = 1.0
            scale = f16(xmax / (maxq - 1))
        zero = min(zero, maxq)
    return scale, float(zero)


def quantize(x, scale, zero, maxq):
    return np.clip(np.round(x / scale) + zero, 0, maxq)


def gptq(c):
    W = np.array(c["w"], dtype=np.float64)
    H = np.array(c["h"], dtype=np.float64)
    bits, g, bs = c["bits"], c["group_size"], c["block_size"]
    sym, actorder, static = c["sym"], c["act_order"], c["static_groups"]
    maxq = 2 ** bits - 1
    rows, cols = W.shape

    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    groups = None
    if static:
        groups = [[fit(W[r, i:i + g], bits, sym) for r in range(rows)] for i in range(0, cols, g)]

    perm = np.arange(cols)
    if actorder:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]

    damp = c["damp"] * np.mean(np.diag(H))
    H[np.arange(cols), np.arange(cols)] += damp
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: H^-1 = U^T U

    Q = np.zeros((rows, cols))
    scales = np.zeros((rows, cols // g))
    zeros = np.zeros((rows, cols // g))
    cur = [None] * rows
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            col = i1 + i
            w = W1[:, i]
            d = Hinv1[i, i]
            q = np.zeros(rows)
            for r in range(rows):
                if static:
                    s, z = groups[perm[col] // g][r]
                else:
                    if col % g == 0:
                        span = np.concatenate([W1[r, i:], W[r, i2:]])[:g]
                        cur[r] = fit(span, bits, sym)
                        scales[r, col // g], zeros[r, col // g] = cur[r]
                    s, z = cur[r]
                q[r] = quantize(w[r], s, z, maxq)
                Q[r, col] = q[r]
                w_q = s * (q[r] - z)
                Err1[r, i] = (w[r] - w_q) / d
            W1[:, i:] -= np.outer(Err1[:, i], Hinv1[i, i:])
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    codes = np.zeros((rows, cols), dtype=np.int64)
    codes[:, perm] = Q
    out = {"codes": codes.tolist()}
    if static:
        out["scales"] = [[groups[gi][r][0] for r in range(rows)] for gi in range(cols // g)]
        out["zeros"] = [[groups[gi][r][1] for r in range(rows)] for gi in range(cols // g)]
        out["g_idx"] = None
    else:
        out["scales"] = scales.T.tolist()
        out["zeros"] = zeros.T.tolist()
        if actorder:
            g_idx = np.zeros(cols, dtype=np.int64)
            g_idx[perm] = np.arange(cols) // g
            out["g_idx"] = g_idx.tolist()
        else:
            out["g_idx"] = None
    return out


def main():
    cases = json.load(open(sys.argv[1]))
    json.dump([gptq(c) for c in cases], open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
