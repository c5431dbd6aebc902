"""Token ids from transformers' own GGUF tokenizer conversion (AutoTokenizer with gguf_file=), the
oracle for the runtime's GGUF tokenizer. Writes the fixture tests/fixtures/smollm2_tokens.json.

usage: hf_gguf_tokens.py MODEL.gguf TEXTS.json OUT.json
"""
import json
import os
import sys

from transformers import AutoTokenizer


def main():
    gguf, texts_path, out_path = sys.argv[1:4]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf)), gguf_file=os.path.basename(gguf))
    texts = json.load(open(texts_path))
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in texts]
    json.dump(cases, open(out_path, "w"), ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
