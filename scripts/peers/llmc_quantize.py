"""Runs one llm-compressor 0.14 recipe on a Hugging Face folder with a given set of calibration
samples (token ids, the exact samples `quantize` used) and saves the compressed folder.

usage: llmc_quantize.py BASE_DIR SCHEME OUT_DIR [SAMPLES.jsonl] [--smoothquant ALPHA]
  SCHEME: FP8_DYNAMIC | FP8 | FP8_BLOCK | W8A8 | W8A16 (group 128) | W8A16_CHANNEL (int8 per-channel
  weight-only: the preset W8A16 uses groups of 128, which SmolLM2's 576-wide layers refuse)
  SAMPLES.jsonl: one {"input_ids": [...]} per line, as `quantize ... --save-samples` writes them
  (needed for schemes with calibration: FP8 static, SmoothQuant)
Prints one JSON line with timings: import, load, oneshot, save, total (seconds).
"""
import json
import sys
import time

T0 = time.time()
import torch  # noqa: E402

torch.set_num_threads(2)
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from llmcompressor import oneshot  # noqa: E402
from llmcompressor.modifiers.quantization import QuantizationModifier  # noqa: E402
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier  # noqa: E402

T_IMPORT = time.time()


def main():
    args = sys.argv[1:]
    alpha = None
    if "--smoothquant" in args:
        i = args.index("--smoothquant")
        alpha = float(args[i + 1])
        del args[i : i + 2]
    base, scheme, out = args[:3]
    samples = [json.loads(l)["input_ids"] for l in open(args[3])] if len(args) > 3 else None

    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    tok = AutoTokenizer.from_pretrained(base)
    t_load = time.time() - t

    recipe = []
    if alpha is not None:
        recipe.append(SmoothQuantModifier(smoothing_strength=alpha))
    if scheme == "W8A16_CHANNEL":
        weights = dict(num_bits=8, type="int", strategy="channel", symmetric=True, dynamic=False)
        groups = {"group_0": {"targets": ["Linear"], "weights": weights}}
        recipe.append(QuantizationModifier(config_groups=groups, ignore=["lm_head"]))
    else:
        recipe.append(QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]))

    kw = {}
    if samples is not None:
        ds = Dataset.from_dict(
            {"input_ids": samples, "attention_mask": [[1] * len(s) for s in samples]}
        )
        kw = dict(
            dataset=ds,
            num_calibration_samples=len(samples),
            max_seq_length=max(len(s) for s in samples),
            shuffle_calibration_samples=False,
        )
    t = time.time()
    oneshot(model=model, recipe=recipe, **kw)
    t_oneshot = time.time() - t

    t = time.time()
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    t_save = time.time() - t
    print(
        json.dumps(
            {
                "scheme": scheme,
                "smoothquant": alpha,
                "samples": 0 if samples is None else len(samples),
                "import_s": round(T_IMPORT - T0, 2),
                "load_s": round(t_load, 2),
                "oneshot_s": round(t_oneshot, 2),
                "save_s": round(t_save, 2),
                "convert_s": round(t_load + t_oneshot + t_save, 2),
                "total_s": round(time.time() - T0, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
