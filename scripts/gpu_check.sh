#!/usr/bin/env bash
# One-shot GPU check of the CUDA rasterizer, for a short loan of a machine with an NVIDIA GPU
# (sm_90 by default: H100 / H200). Run from the repository root:
#
#   OUT=/some/dir bash scripts/gpu_check.sh          # everything below, in order (default OUT: runs/gpu_check)
#   STEPS="build tests" bash scripts/gpu_check.sh     # a subset
#
# Steps (each logged to $OUT/<step>.log, with its last lines in $OUT/summary.txt; a step
# that fails does not stop the next ones, and each has a time limit so a short loan still
# returns the earlier results):
#   env       nvidia-smi, nvcc, Python, JAX devices
#   build     cmake/nvcc build of cuda_ffi for $CUDA_ARCH (default 90) into build/gpu; the
#             loader is pointed there with SPLATJAX_KERNEL_DIR
#   tests     the kernel tests with the real CUDA kernel (the "cuda" cases of
#             tests/test_kernels.py, which skip without a GPU, plus the emulator's tests)
#   sanitize  compute-sanitizer memcheck, racecheck and synccheck on one forward + backward
#             (scripts/gpu_check_case.py; XLA's allocator set to plain cudaMalloc so memcheck
#             sees every buffer's bounds)
#   bench     scripts/bench_render.py at C = 1 and C = 64 (with gsplat in the same run when
#             it imports), its BENCHMARKS.md section copied to $OUT
#   fit       scripts/fit_lego_cpu.py --full (the full lego fit: val PSNR, wall time); needs
#             the lego data in $LEGO_DATA, shared/data/nerf_synthetic_lego_400 or
#             ../shared/data/nerf_synthetic_lego_400
# Python packages splatjax needs that the machine lacks (e.g. dm-pix, plyfile) can be carried
# as wheels in .gpu_wheels/ (pip download them beforehand); they are installed with --no-deps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
CUDA_ARCH=${CUDA_ARCH:-90}
PY=${PYTHON:-python3}
STEPS=${STEPS:-"env build tests sanitize bench fit"}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export SPLATJAX_KERNEL_DIR="$PWD/build/gpu"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

run_step() {  # run_step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS rc
  echo "== $name: $*" | tee -a "$SUMMARY"
  timeout "$limit" bash -c "$*" >>"$OUT/$name.log" 2>&1
  rc=$?
  echo "   $name: exit $rc after $((SECONDS - t0)) s; last lines:" | tee -a "$SUMMARY"
  tail -n 5 "$OUT/$name.log" | sed 's/^/     /' | tee -a "$SUMMARY"
}

if [ -d .gpu_wheels ]; then
  "$PY" -m pip install -q --no-deps --no-index --find-links .gpu_wheels .gpu_wheels/*.whl >"$OUT/env.log" 2>&1 || true
fi

run_step env 60 "nvidia-smi; nvcc --version; $PY -c 'import jax, jaxlib; print(jax.__version__, jaxlib.__version__, jax.devices())'"

run_step build 900 "cmake -S cuda_ffi -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSPLATJAX_CUDA_ARCHITECTURES=$CUDA_ARCH && \
  cmake --build build/gpu -j \$(nproc) && ls -l build/gpu/*.so && \
  $PY -c 'from splatjax.render import ffi; print(ffi.kernel_library(\"cuda\"), ffi.available_platforms(include_emulation=True))'"

run_step tests 900 "$PY -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_cuda_emu.py -rs"

run_step sanitize 600 "export XLA_PYTHON_CLIENT_ALLOCATOR=platform XLA_PYTHON_CLIENT_PREALLOCATE=false; \
  for tool in memcheck racecheck synccheck; do echo \"--- \$tool\"; \
    compute-sanitizer --tool \$tool --error-exitcode 3 $PY scripts/gpu_check_case.py || echo \"\$tool: exit \$?\"; done"

run_step bench 900 "export XLA_PYTHON_CLIENT_PREALLOCATE=false; $PY scripts/bench_render.py --backends cuda --sizes 100000 300000 --cameras 1 64 --repeats 5 && \
  awk '/^## bench_render/{s=\$0 ORS; next} s{s=s \$0 ORS} END{printf \"%s\", s}' BENCHMARKS.md >$OUT/bench_section.md"

LEGO=${LEGO_DATA:-}
for d in shared/data/nerf_synthetic_lego_400 ../shared/data/nerf_synthetic_lego_400; do
  if [ -z "$LEGO" ] && [ -f "$d/transforms_train.json" ]; then LEGO=$d; fi
done
if [ -n "$LEGO" ]; then
  run_step fit 3600 "$PY scripts/fit_lego_cpu.py --full --data $LEGO --out runs/gpu_lego_full --quiet; \
    cat runs/gpu_lego_full/info.json; tail -n 3 runs/gpu_lego_full/metrics.jsonl"
else
  case " $STEPS " in *" fit "*) echo "== fit: skipped (no lego data; set LEGO_DATA)" | tee -a "$SUMMARY" ;; esac
fi
echo "results in $OUT" | tee -a "$SUMMARY"
