"""Compares two GGUF files with gguf-py: every tensor (type, shape, data bytes) and every metadata
key, whatever the order of either.

usage: gguf_diff.py A.gguf B.gguf [IGNORED_KEY ...]   prints JSON {"tensors": n,
"tensor_diffs": [...], "meta_diffs": [...]}
"""
import json
import sys

from gguf import GGUFReader


def main():
    a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
    ignored = set(sys.argv[3:])
    fa = {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.")}
    fb = {k: f.contents() for k, f in b.fields.items() if not k.startswith("GGUF.")}
    meta = [f"{k}: {str(fa.get(k, '(absent)'))[:60]!r} vs {str(fb.get(k, '(absent)'))[:60]!r}"
            for k in sorted(set(fa) | set(fb)) if k not in ignored and fa.get(k) != fb.get(k)]
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    diffs = [f"{n}: only in one file" for n in sorted(set(ta) ^ set(tb))]
    for n in sorted(set(ta) & set(tb)):
        x, y = ta[n], tb[n]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            diffs.append(f"{n}: {x.tensor_type.name} {list(x.shape)} vs {y.tensor_type.name} {list(y.shape)}")
        elif x.data.tobytes() != y.data.tobytes():
            diffs.append(f"{n}: {x.tensor_type.name} bytes differ")
    print(json.dumps({"tensors": len(ta), "tensor_diffs": diffs, "meta_diffs": meta}))


if __name__ == "__main__":
    main()
