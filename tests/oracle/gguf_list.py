"""Lists a GGUF file's tensors and metadata keys with gguf-py, the oracle for `quantize inspect`.

usage: gguf_list.py MODEL.gguf  → JSON {"tensors": [{"name", "type", "shape"}], "keys": [...]} on stdout
(shape in PyTorch order, rows first)
"""
import json
import sys

from gguf import GGUFReader


def main():
    r = GGUFReader(sys.argv[1])
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in reversed(t.shape.tolist())]}
               for t in r.tensors]
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    json.dump({"tensors": tensors, "keys": keys}, sys.stdout)


if __name__ == "__main__":
    main()
