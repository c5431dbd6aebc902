#!/usr/bin/env bash
# Conversion wall time of `quantize int8` (W8A8, SmoothQuant 0.5) and `quantize fp8` (dynamic)
# against llm-compressor's W8A8 + SmoothQuant and FP8_DYNAMIC recipes on the same model and the
# same calibration samples (the token ids `quantize` draws, saved with --save-samples), both on
# 2 threads. The two tools run alternately ROUNDS times: llm-compressor's time varies by ±15%
# between runs on one machine, so compare runs that are neighbours in time.
#   usage: LLMC_PYTHON=/path/to/venv/bin/python scripts/compare-llm-compressor.sh [OUT_DIR]
# Env: LLMC_PYTHON (a Python with llmcompressor 0.14 installed; required), QUANTIZE (default
#      target/release/quantize), BASE (default the cached SmolLM2 bf16 base), ROUNDS (3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${LLMC_PYTHON:?set LLMC_PYTHON to a Python with llmcompressor installed}
Q=${QUANTIZE:-$ROOT/target/release/quantize}
BASE=${BASE:-$HOME/.cache/quantize/assets/base/smollm2-135m-instruct-bf16}
ROUNDS=${ROUNDS:-3}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
CAL=(--nsamples 32 --seqlen 512)

timed() {  # name, command...: runs it, prints "name seconds"
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  /usr/bin/time -f "%e" -o "$OUT/$name.time" "$@" >"$OUT/$name.log" 2>&1 \
    || { echo "$name failed, see $OUT/$name.log" >&2; exit 1; }
  echo "$name $(cat "$OUT/$name.time")"
}

"$Q" -t 2 int8 --smoothquant 0.5 "${CAL[@]}" --save-samples "$OUT/samples.jsonl" \
  --model "$BASE" --out "$OUT/warmup" >/dev/null 2>&1
echo "| run | quantize (s) | llm-compressor (s) | ratio |"
echo "|---|---|---|---|"
row() {  # label, ours-name, ours-command..., --, theirs-name, theirs-command...
  local label=$1 a b ta tb; shift
  a=$1; shift
  local ours=()
  while [ "$1" != -- ]; do ours+=("$1"); shift; done
  shift; b=$1; shift
  ta=$(timed "$a" "${ours[@]}" | cut -d' ' -f2)
  tb=$(timed "$b" "$@" | cut -d' ' -f2)
  echo "| $label | $ta | $tb | $(echo "scale=2; $tb / $ta" | bc)× |"
}
for i in $(seq "$ROUNDS"); do
  row "W8A8 SmoothQuant 0.5, round $i" "ours-w8a8-$i" \
    "$Q" -t 2 int8 --smoothquant 0.5 "${CAL[@]}" --model "$BASE" --out "$OUT/ours-w8a8-$i" -- \
    "llmc-w8a8-$i" "$PY" "$ROOT/scripts/peers/llmc_quantize.py" "$BASE" W8A8 "$OUT/llmc-w8a8-$i" \
    "$OUT/samples.jsonl" --smoothquant 0.5
done
row "FP8 dynamic" ours-fp8 "$Q" -t 2 fp8 --scheme dynamic --model "$BASE" --out "$OUT/ours-fp8" -- \
  llmc-fp8 "$PY" "$ROOT/scripts/peers/llmc_quantize.py" "$BASE" FP8_DYNAMIC "$OUT/llmc-fp8"
echo "folders and logs: $OUT"
