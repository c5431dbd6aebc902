#!/usr/bin/env bash
# The main job end to end on the default real model (README, command 1): fetch the assets, build,
# turn the shipped SmolLM2-135M-Instruct GGUF into the full-precision Hugging Face base that every
# converter starts from, and generate from both.
set -euo pipefail
cd "$(dirname "$0")/.."

A=$(./scripts/fetch-assets.sh)
cargo build --release --quiet
Q=./target/release/quantize
GGUF=$A/models/SmolLM2-135M-Instruct.Q4_1.gguf
BASE=$A/base/smollm2-135m-instruct-bf16

echo "== inspect the shipped model"
$Q inspect "$GGUF" | tail -n 1

echo "== convert it to a bf16 Hugging Face folder: $BASE"
$Q convert --model "$GGUF" --out "$BASE"

echo "== generate (greedy) from the GGUF and from the converted folder"
$Q generate --model "$GGUF" --prompt "The three primary colors are" --max-tokens 32 --stats
$Q generate --model "$BASE" --prompt "The three primary colors are" --max-tokens 32 --stats
$Q generate --model "$BASE" --chat --prompt "Give me one tip for writing clear code." --max-tokens 48

echo "== FP8 (llm-compressor's FP8_DYNAMIC format, vLLM-ready) from the base, and generate from it"
$Q fp8 --model "$BASE" --out "$A/demo/smollm2-fp8-dynamic"
$Q generate --model "$A/demo/smollm2-fp8-dynamic" --prompt "The three primary colors are" --max-tokens 32 --stats
