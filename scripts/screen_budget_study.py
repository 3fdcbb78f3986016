"""How early the screening's ranking settles, on data with known poses.

  python scripts/screen_budget_study.py CLASS --model RUN [--json OUT.json]

Runs the pose stage of ``splatjax evaluate`` up to the screening (coarse retrieval, keypoint
polish, the default PoseConfig with the model's background and supersampling) on every
test image of CLASS (``test_poses.json`` gives the truth) and records, for each screened
query, the loss trace of each of its candidates through the whole screening. For a cut
after s steps it prints how often the candidate the full screening keeps (lowest loss) is
among the best half by the lowest loss seen up to step s, and the same for the candidate
that ends nearest the truth. This is what a screening that drops the worse half after s
steps needs (:class:`splatjax.pose.PoseConfig` ``screen_halving_step``).

``--halving S [S ...]``: also run the screening with ``screen_halving_step`` S on the same
candidates and keys, and print for each how often its kept candidate ends within 0.3 rad of
the truth (the fine pose's basin), next to the full screening's count.

``--gaussians SHARE [SHARE ...]``: also run the default screening (its halving step) rendering
only that share of the model's Gaussians (``screen_gaussians``, the most opaque) on the same
candidates and keys, and print for each how often its kept candidate ends within 0.3 rad,
how often it keeps the candidate the default screening with every Gaussian keeps, and the
seconds of each (one run, one machine: compare them as ratios).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
import splatjax as sj  # noqa: E402
from splatjax.app.runs import model_supersample  # noqa: E402
from splatjax.data import load_mad_class  # noqa: E402
from splatjax.metrics import pose_errors  # noqa: E402
from splatjax.pose import estimate as est_mod  # noqa: E402
from splatjax.pose.cameras import camera_to_c2w  # noqa: E402
from splatjax.pose.fine import refine_poses_detailed  # noqa: E402
from splatjax.pose.screen import screen_config, screen_hypotheses, screen_inputs  # noqa: E402

CUTS = (5, 10, 15, 20)
BASIN = 0.3  # rad


def survivors(traces: np.ndarray, final: np.ndarray, err: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, for a cut after ``s`` steps that keeps the better half (the first n - n // 2
    by the lowest loss of steps 0 .. s, ``traces`` [Q, n, k] the loss before each step; ties
    to the lower index): is the candidate of lowest ``final`` loss kept, and is the one
    nearest the truth (``err`` [Q, n], rad) kept or not within BASIN anyway?"""
    n = traces.shape[1]
    best = np.min(traces[:, :, : s + 1], axis=2)
    top = np.argsort(best, axis=1, kind="stable")[:, : n - n // 2]
    keep, nearest = np.argmin(final, axis=1), np.argmin(err, axis=1)
    rows = np.arange(len(final))
    kept_in = (top == keep[:, None]).any(axis=1)
    near_in = (top == nearest[:, None]).any(axis=1) | (err[rows, nearest] >= BASIN)
    return kept_in, near_in


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="screen_budget_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", required=True, help="a fit's run folder or its model.ply")
    ap.add_argument("--resolution", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--halving", type=int, nargs="*", default=[])
    ap.add_argument("--gaussians", type=float, nargs="*", default=[])
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    ply = Path(args.model) / "model.ply" if Path(args.model).is_dir() else Path(args.model)
    cls = load_mad_class(args.data, args.resolution, test_poses=Path(args.data) / "test_poses.json")
    g = sj.load_ply(ply)
    # the recorded screening renders every Gaussian, so --halving compares the halving alone against it
    pc = sj.PoseConfig(background=cls.train.background, supersample=model_supersample(ply), screen_halving_step=0,
                       screen_gaussians=1.0)
    recorded, halved, shared = [], {}, {}

    def recording_screen(gaussians, cameras, queries, n, config, *, key, context, parallel, objective):
        w = queries.shape[2]
        small_cams, small = screen_inputs(cameras, queries, n, config)
        ref = refine_poses_detailed(gaussians, small_cams, small, screen_config(config), key=key, context=context,
                                    parallel=parallel, objective=objective)
        recorded.append((np.asarray(ref.traces), ref.cameras.scaled(w, queries.shape[1]), np.asarray(ref.loss)))
        for split in args.halving:
            halving = replace(config, screen_halving_step=split)
            halved[split] = screen_hypotheses(gaussians, cameras, queries, n, halving, key=key, context=context,
                                              parallel=parallel, objective=objective)
        for share in [1.0] + [x for x in args.gaussians if x != 1.0] if args.gaussians else []:
            default = replace(config, screen_halving_step=sj.PoseConfig().screen_halving_step, screen_gaussians=share)
            t0 = time.perf_counter()
            got = screen_hypotheses(gaussians, cameras, queries, n, default, key=key, context=context,
                                    parallel=parallel, objective=objective)
            jax.block_until_ready(got[0].R)
            shared[share] = got + (time.perf_counter() - t0,)
        return ref.cameras.scaled(w, queries.shape[1]), np.asarray(ref.loss, np.float64).reshape(-1, n)

    est_mod.screen_hypotheses = recording_screen
    queries = np.asarray(cls.test.images, np.float32)
    truth = np.asarray(cls.test.c2w)
    cands = sj.candidate_cameras(cls.train.cameras, pc)
    st = est_mod.pose_starts(g, queries, cands, pc, key=jax.random.key(args.seed), context=sj.QUIET)
    if not recorded:
        print("no query was screened")
        return 0
    traces, cams, losses = recorded[0]
    n = pc.screen_candidates
    rows = np.flatnonzero(~np.isnan(st.screen_losses[:, 0]))
    q = rows.size

    def errors_of(screened):  # [Q, n] rotation errors (rad) of screened cameras [Q * n]
        return pose_errors(camera_to_c2w(screened), np.repeat(truth[rows], n, axis=0))["rotation_rad"].reshape(q, n)

    err = errors_of(cams)
    traces = traces.reshape(q, n, -1)
    final = losses.reshape(q, n)
    keep, nearest = np.argmin(final, axis=1), np.argmin(err, axis=1)
    out = {"class": args.data, "model": str(ply), "screened": int(q), "queries": int(len(queries)), "cuts": {}}
    in_basin = int((err[np.arange(q), keep] < BASIN).sum())
    print(f"{args.data}: {q} of {len(queries)} queries screened; the kept candidate is the nearest in "
          f"{int((keep == nearest).sum())}, within {BASIN} rad in {in_basin}")
    out["kept_in_basin"] = in_basin
    for split, (hcams, hloss) in halved.items():
        hkeep = np.argmin(hloss, axis=1)
        herr = errors_of(hcams)
        got = int((herr[np.arange(q), hkeep] < BASIN).sum())
        out.setdefault("halving", {})[split] = {"kept_in_basin": got, "errors": herr.tolist()}
        print(f"  halving after {split} steps: the kept candidate within {BASIN} rad in {got}/{q} (full screening "
              f"{in_basin}/{q}); both keep the same candidate in {int((hkeep == keep).sum())}/{q}")

    def kept_errors(scams, sloss):
        skeep = np.argmin(sloss, axis=1)
        return skeep, errors_of(scams)[np.arange(q), skeep]

    if shared:
        base_keep, _ = kept_errors(*shared[1.0][:2])
    for share, (scams, sloss, seconds) in shared.items():
        skeep, serr = kept_errors(scams, sloss)
        got = int((serr < BASIN).sum())
        out.setdefault("gaussians", {})[share] = {"kept_in_basin": got, "same_as_all": int((skeep == base_keep).sum()),
                                                  "seconds": seconds, "kept_errors": serr.tolist()}
        print(f"  default screening with {share:g} of the Gaussians: the kept candidate within {BASIN} rad in "
              f"{got}/{q}, the same as with all of them in {int((skeep == base_keep).sum())}/{q}; {seconds:.1f} s")
    for s in CUTS:
        kept_in, near_in = survivors(traces, final, err, s)
        out["cuts"][s] = {"kept_in_best_half": int(kept_in.sum()), "nearest_in_best_half": int(near_in.sum())}
        print(f"  cut after {s:2d} steps: the kept candidate in the best half {int(kept_in.sum())}/{q}; the "
              f"nearest (within {BASIN} rad) in it {int(near_in.sum())}/{q}")
    if args.json:
        out["errors"] = err.tolist()
        out["final_losses"] = final.tolist()
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
