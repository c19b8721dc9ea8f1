#!/usr/bin/env bash
# The GPU benchmark in one command (about 5-8 minutes on one H200-class GPU): training steps/s
# (eager, compiled), MNIST gated steps/s, NLL images/s, the 30 000-step pendulum run end to end.
# Writes bench/GPU_RESULTS.md. On a CPU: bash bench/gpu.sh --device cpu --budget tiny
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
test -x "$PY" || PY=python3
exec "$PY" bench/gpu.py "$@"
