#!/usr/bin/env bash
# The project's test command (README, CI): installs the real assets and the Python oracles the
# tests compare against, then runs every test of the workspace. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/fetch-assets.sh >/dev/null

# Independent oracles (gguf-py decodes llama.cpp's formats; NumPy computes in float64), in a
# virtual environment beside the asset cache, made once.
V=${QUANTIZE_ORACLE_VENV:-${QUANTIZE_ASSETS:-$HOME/.cache/quantize/assets}/oracle-venv}
if ! "$V/bin/python" -c 'import numpy, gguf' 2>/dev/null; then
  python3 -m venv "$V"
  "$V/bin/pip" install -q numpy==2.4.6 gguf==0.19.0
fi
export QUANTIZE_PYTHON="$V/bin/python"

cargo test --workspace "$@"
