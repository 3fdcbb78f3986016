"""Show that each fault test of tests/test_cuda_emu.py fails without its fix.

For each fault found by the CUDA emulation (issue 9), a copy of ``cuda_ffi/cuda.cu`` with
that one fix reverted (textual replacements that restore the old code's behaviour) is
compiled into an emulation library in a temporary build directory, and the fault's tests
are run against it (``SPLATJAX_KERNEL_DIR``): they must fail. Every replacement must match
exactly once, so the script notices when cuda.cu has moved on. Nothing in the tree changes.

  python scripts/check_fault_tests.py               # every fault
  python scripts/check_fault_tests.py int32 n0      # some

Needs cmake and a C++ compiler (no GPU); about 20 s per fault.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T = "tests/test_cuda_emu.py::"

# fault: (what the old code did, tests that must fail, [(new code, old code), ...])
FAULTS = {
    "alignment": (
        "scratch requested with 256-byte alignment (XLA allows at most 16)",
        [T + "test_scratch_requests_follow_xla_rules"],
        [("auto p = a_.Allocate(bytes, std::min(kScratchAlign, alignof(T) < 4 ? size_t(4) : alignof(T)));",
          "auto p = a_.Allocate(bytes, 256);")],
    ),
    "n0": (
        "zero-block launches and a read of ends[CN - 1] when there are no Gaussians",
        [T + "test_zero_gaussians_with_a_camera_stack"],
        [("const int64_t v = CN > 0 ? ends[CN - 1] : 0;", "const int64_t v = ends[CN - 1];"),
         ("  if (CN > 0) {\n    SJ_LAUNCH(project_kernel, blocks_for(CN), THREADS, 0, stream)(d, b.gdata, depth",
          "  {\n    SJ_LAUNCH(project_kernel, blocks_for(CN), THREADS, 0, stream)(d, b.gdata, depth"),
         ("  if (CN == 0) return ffi::Error::Success();  // no lists: every tile range is empty\n", ""),
         ("  if (N > 0) {\n    SJ_LAUNCH(project_bwd_kernel", "  {\n    SJ_LAUNCH(project_bwd_kernel"),
         ("  if (most > 0) {\n    SJ_LAUNCH(overflow_nan_kernel", "  {\n    SJ_LAUNCH(overflow_nan_kernel")],
    ),
    "overflow": (
        "at an overflow only the mean gradients were NaN; the pose gradients stayed finite",
        [T + "test_backward_overflow_makes_every_gradient_nan[cuda-emu]"],
        [("const float v = *total > cap ? nan_f() : (float)pose[j];", "const float v = (float)pose[j];"),
         ("  for (int k = 0; k < 6; ++k)\n    if (i < t.n[k]) t.p[k][i] = nan_f();",
          "  if (i < t.n[0]) t.p[0][i] = nan_f();")],
    ),
    "int32": (
        "int32 tile counts and scan: the total wraps past 2^31 and `needed` goes negative",
        [T + "test_intersection_total_beyond_int32_is_an_overflow"],
        [("int64_t* counts = scratch.take<int64_t>(CN);", "int32_t* counts = scratch.take<int32_t>(CN);"),
         ("__global__ void project_kernel(Dev d, float* gdata, float* depth, int4* rect, int64_t* counts)",
          "__global__ void project_kernel(Dev d, float* gdata, float* depth, int4* rect, int32_t* counts)"),
         # the old kernels compared the total as uint32 with the capacity, and returned it as int32
         ("const int64_t v = CN > 0 ? ends[CN - 1] : 0;", "const int64_t v = CN > 0 ? (int64_t)(uint32_t)ends[CN - 1] : 0;"),
         ("if (needed) needed[0] = (int32_t)(v > INT32_MAX ? INT32_MAX : v);", "if (needed) needed[0] = (int32_t)v;")],
    ),
    "checks": (
        "return codes of cudaMemsetAsync and CUB never checked",
        [T + "test_every_cuda_error_is_an_ffi_error_naming_the_step"],
        [("SJ_TRY(cudaMemsetAsync(", "(void)(cudaMemsetAsync("), ("SJ_TRY(cub::", "(void)(cub::")],
    ),
}


def revert(source: str, pairs) -> str:
    for new, old in pairs:
        n = source.count(new)
        if n == 0:
            raise SystemExit(f"cuda.cu no longer contains {new!r}: update scripts/check_fault_tests.py")
        source = source.replace(new, old)
    return source


def build(source: Path, build_dir: Path) -> None:
    subprocess.run(["cmake", "-S", str(ROOT / "cuda_ffi"), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DSPLATJAX_CUDA=OFF", f"-DSPLATJAX_CUDA_EMU_SOURCE={source}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "splatjax_cuda_emu", "-j2"], check=True,
                   capture_output=True)


def run_tests(tests, kernel_dir: Path) -> tuple[bool, str]:
    env = dict(os.environ, SPLATJAX_KERNEL_DIR=str(kernel_dir))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    crash = next((ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Fatal Python error")), None)
    if crash:  # e.g. a kernel writing through an index read from a buffer a failed call left poisoned
        return False, f"the test process crashed ({crash})"
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    why = next((ln[1:].strip() for ln in lines if ln.startswith("E ") and len(ln.strip()) > 3), "")
    last = lines[-1] if lines else r.stderr[-300:]
    return r.returncode == 0, f"{last}" + (f"\n           first error: {why[:200]}" if why and r.returncode else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("faults", nargs="*", help=f"some of: {', '.join(FAULTS)} (default: all)")
    args = ap.parse_args(argv)
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown:
        ap.error(f"unknown fault(s) {unknown}; choose from {list(FAULTS)}")
    source = (ROOT / "cuda_ffi" / "cuda.cu").read_text()
    ok = True
    with tempfile.TemporaryDirectory(prefix="sj_faults_") as tmp:
        for name in args.faults or list(FAULTS):
            what, tests, pairs = FAULTS[name]
            src = Path(tmp) / f"cuda_{name}.cu"
            src.write_text(revert(source, pairs))
            bdir = Path(tmp) / f"build_{name}"
            build(src, bdir)
            passed, last = run_tests(tests, bdir)
            verdict = "FAILS without the fix (good)" if not passed else "PASSES without the fix (BAD)"
            print(f"{name:10s} {what}\n           {verdict}: {last}", flush=True)
            ok &= not passed
        bdir = Path(tmp) / "build_current"
        build(ROOT / "cuda_ffi" / "cuda.cu", bdir)
        passed, last = run_tests([t for n in (args.faults or FAULTS) for t in FAULTS[n][1]], bdir)
        print(f"{'current':10s} cuda.cu as it is: {'passes' if passed else 'FAILS'}: {last}")
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
