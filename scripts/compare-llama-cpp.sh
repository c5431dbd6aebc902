#!/usr/bin/env bash
# Speed against llama.cpp on the same machine, in the same run, 2 threads: quantization
# throughput (F16 → Q4_K_M, Q6_K; the outputs must be byte-identical), llama-bench's pp512/tg128
# on Q4_K_M and Q8_0, and llama-perplexity's tokens/s and PPL on the same text.
# usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/compare-llama-cpp.sh
# Check the peer first: some llama.cpp builds compute Q4_0/Q4_1 wrong on AVX-512 machines.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to a folder holding llama-quantize, llama-bench, llama-perplexity}
A=$(./scripts/fetch-assets.sh)
cargo build --release --quiet
Q=./target/release/quantize
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
BASE=$A/base/smollm2-135m-instruct-bf16
[ -d "$BASE" ] || $Q convert --model "$A/models/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$BASE"
$Q gguf --model "$BASE" --type F16 --out "$W/f16.gguf" >/dev/null
echo "== quantization F16 -> TYPE, best of 3 (wall s, peak RSS KB)"
for ty in Q4_K_M Q6_K; do
  for _ in 1 2 3; do
    /usr/bin/time -f "llama-quantize $ty %e s %M KB" "$L/llama-quantize" "$W/f16.gguf" "$W/l-$ty.gguf" $ty 2 2>&1 >/dev/null | tail -1
    /usr/bin/time -f "quantize gguf  $ty %e s %M KB" $Q -t 2 gguf --model "$W/f16.gguf" --type $ty --out "$W/o-$ty.gguf" 2>&1 >/dev/null | tail -1
  done
  cmp "$W/l-$ty.gguf" "$W/o-$ty.gguf" && echo "$ty: byte-identical"
done
echo "== pp512 / tg128"
for ty in Q4_K_M Q8_0; do
  f=$W/o-$ty.gguf; [ -s "$f" ] || $Q -t 2 gguf --model "$W/f16.gguf" --type $ty --out "$f" >/dev/null
  "$L/llama-bench" -m "$f" -t 2 -p 512 -n 128 -r 5 -o md 2>/dev/null | grep -E "pp512|tg128"
  $Q bench -m "$f" -t 2 -p 512 -n 128 -r 5 | grep -E "pp512|tg128"
done
echo "== perplexity, wiki.txt, 8 chunks of 512"
for ty in Q4_K_M Q8_0; do
  "$L/llama-perplexity" -m "$W/o-$ty.gguf" -f "$A/text/wiki.txt" -c 512 --chunks 8 -t 2 2>&1 | grep -E "Final|prompt eval time"
  $Q -t 2 ppl -m "$W/o-$ty.gguf" -f "$A/text/wiki.txt" --ctx 512 --chunks 8 2>&1 | grep -E "Final|tokens evaluated"
done
