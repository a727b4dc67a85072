#!/usr/bin/env bash
# One prepared check for a lent GPU; the logic and its usage are in benchmarks/gpu_check.py.
#   bash benchmarks/gpu_check.sh --out "$OUT"                # on the GPU machine (--device cuda)
#   bash benchmarks/gpu_check.sh --device cpu --dry-run      # anywhere: a shrunk dry run
#   bash benchmarks/gpu_check.sh --llm --out "$OUT"          # the LLM variant: benchmarks/gpu_llm.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x .venv/bin/python ]]; then
    python="$PWD/.venv/bin/python"
else
    python=python3
fi
if [[ "${1:-}" == "--llm" ]]; then
    shift
    exec "$python" benchmarks/gpu_llm.py "$@"
fi
exec "$python" benchmarks/gpu_check.py "$@"
