#!/usr/bin/env bash
# Create .venv and install splatjax with its CPU set-up (torch pinned to the CPU wheel).
# Builds the CPU rasterizer kernel always, and the CUDA kernel when nvcc is found.
# Re-running it on an unchanged tree installs nothing: the install is stamped with a hash of
# the files it is built from (pyproject.toml, cuda_ffi/, splatjax/, this script).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate

tree_hash() {
  find pyproject.toml cuda_ffi splatjax scripts/setup.sh -type f \
    -not -path '*/__pycache__/*' -not -name '*.pyc' -not -name '*.so' -print0 \
    | sort -z | xargs -0 sha1sum | sha1sum | cut -d' ' -f1
}
STAMP=.venv/.splatjax-installed
HASH=$(tree_hash)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  echo "splatjax: .venv is up to date with this tree (nothing to install)"
  exit 0
fi

python -m pip install -q --upgrade pip
# torch first and pinned: any other torch request would pull GBs of CUDA packages.
if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  python -m pip install -q "torch==2.13.0"
fi
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; break; fi
  done
fi
python -m pip install -q ".[torch,dev,synth]"
python -c "import splatjax; print('splatjax', splatjax.__version__, 'backends:', splatjax.available_backends())"
echo "$HASH" > "$STAMP"
