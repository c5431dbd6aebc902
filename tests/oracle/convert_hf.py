"""Runs llama.cpp's convert_hf_to_gguf.py (c392e50) with one fix: for 49152-token vocabularies it
sets tokenizer.ggml.add_bos_token a second time (its Granite rule) after tokenizer_config.json
already set it, and gguf-py refuses the duplicate key. The first value is kept.

usage: convert_hf.py LLAMA_CPP_DIR HF_DIR OUT.gguf OUTTYPE   (needs torch, transformers, gguf-py)
"""
import os
import runpy
import sys

llama_cpp, model, out, outtype = sys.argv[1:5]
sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
import gguf  # noqa: E402

add_key_value = gguf.GGUFWriter.add_key_value


def add_once(self, key, val, vtype, *args, **kwargs):
    if key == gguf.Keys.Tokenizer.ADD_BOS and any(key in kv for kv in self.kv_data):
        return
    return add_key_value(self, key, val, vtype, *args, **kwargs)


gguf.GGUFWriter.add_key_value = add_once
script = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
sys.argv = [script, model, "--outfile", out, "--outtype", outtype]
runpy.run_path(script, run_name="__main__")
