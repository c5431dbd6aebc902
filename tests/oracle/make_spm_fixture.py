"""Builds the SentencePiece fixture of tests/tokenizer_reference.rs: trains a small BPE model with
the sentencepiece library (the reference implementation) on Moby-Dick, stores its vocabulary the
way llama.cpp's converter does (tokenizer.ggml.model "llama": tokens, scores, token types) in a
tensor-less GGUF, and records sentencepiece's own encodings of test strings.

usage: make_spm_fixture.py MOBY_DICK.txt OUT_DIR   (needs sentencepiece, gguf)
writes OUT_DIR/spm_tiny.gguf and OUT_DIR/spm_tokens.json
"""
import json
import os
import sys
import tempfile

import gguf
import sentencepiece as spm

TEXTS = [
    "Call me Ishmael.",
    "Some years ago—never mind how long precisely—having little or no money in my purse,",
    "  two leading spaces, trailing  ",
    "Numbers 1234 and 3.14159, and a URL http://example.com/path?q=1",
    "naïve café, 你好, 🚀 — bytes fall back",
    "The whale! The whale! Thar she blows!",
    "line one\nline two\n\nafter a blank line",
    "",
    "a",
    "unbelievably antidisestablishmentarianism",
]


def main():
    text_path, out_dir = sys.argv[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "m")
        spm.SentencePieceTrainer.train(
            input=text_path, model_prefix=prefix, model_type="bpe", vocab_size=1200,
            byte_fallback=True, character_coverage=0.9995, split_digits=True,
            input_sentence_size=20000, shuffle_input_sentence=False, seed_sentencepiece_size=100000,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            num_threads=1, minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    def kind(i):  # llama.cpp's token types
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        if sp.is_unused(i):
            return 5
        return 1

    ids = range(sp.get_piece_size())
    w = gguf.GGUFWriter(os.path.join(out_dir, "spm_tiny.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i) for i in ids])
    w.add_token_scores([sp.get_score(i) for i in ids])
    w.add_token_types([kind(i) for i in ids])
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    cases = [{"text": t, "ids": sp.encode(t)} for t in TEXTS]
    json.dump(cases, open(os.path.join(out_dir, "spm_tokens.json"), "w"), ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
