#!/usr/bin/env bash
# Create .venv and install splatjax with its CPU set-up (torch pinned to the CPU wheel).
# Builds the CPU rasterizer kernel always, and the CUDA kernel when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: any other torch request would pull GBs of CUDA packages.
python -m pip install -q "torch==2.13.0"
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; break; fi
  done
fi
python -m pip install -q ".[torch,dev]"
python -c "import splatjax; print('splatjax', splatjax.__version__, 'backends:', splatjax.available_backends())"
