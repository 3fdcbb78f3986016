"""How many fine-pose steps, at which learning rate, a query needs: pose error against step.

  python scripts/fine_schedule_study.py CLASS --model RUN [--only PATHS.txt] [--settings default lr=0.003,theta0=1]
                                        [--steps 175] [--cache STARTS.npz] [--json OUT.json]
                                        [--from-truth] [--model-queries SIGMA] [--objective NAME]
                                        [--eval-seed SEED]

Runs the pose stage of the defaults up to the fine pose once (coarse retrieval, keypoint
polish, screening: :func:`splatjax.pose.pose_starts`; cached in ``--cache`` per paths and keys), then for
every ``--settings`` entry (comma-separated: ``lr`` after the first step, ``lr_first``,
``decay`` per 100 steps, ``theta0`` added to the screw's initial theta, ``exact`` 1 for
the corrected exponential; "default": PoseConfig's) one refinement of ``--steps`` steps per query that records every iterate (the screw before
each step and its loss). From these trajectories it evaluates stopping rules offline,
each as the library's refinement would (the returned pose is the lowest-loss iterate seen
up to the stop):

- ``fixed N``: N steps;
- ``stall P tol``: stop after step s >= s0 + P once the best loss has improved by less
  than ``tol`` (relative) over the last P steps, s0 the first iterate whose loss beats the
  start's (at most ``--steps``; the library's ``stop_patience`` / ``stop_tolerance``).

and prints per rule the rotation error (rad) median / 90th percentile / max, the queries
beyond 0.01 rad, the mean number of steps taken and the mean over batches of ``--batch``
queries of their largest (what a vmapped batch costs); ``--json`` keeps these and each rule's
per-query errors (``errors``, in the order of ``paths``). ``--only``: a text file of query paths
(as in per_image.csv), one per line: the subset studied. ``--eval-seed SEED``: each query's
starts and screw initialisation get the keys ``splatjax evaluate --seed SEED`` gives it
(``split(key(SEED), number of test images)[its index]``), so a query of an evaluation is
refined again exactly as there (default: keys of the studied subset, seeds 0 and 1). Choose
rules on tuning data only.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
import splatjax as sj  # noqa: E402
from splatjax.app.runs import resolve_model  # noqa: E402
from splatjax.data import load_mad_class  # noqa: E402
from splatjax.metrics import pose_errors  # noqa: E402
from splatjax.pose import (PoseConfig, PoseRender, camera_to_c2w, candidate_cameras, cameras_from_c2w,  # noqa: E402
                           fine_lr_schedule, get_objective, init_screw, moved_camera, pose_starts)
from splatjax.render import render  # noqa: E402

CONVERGED = 0.01


SETTING_KEYS = {"lr": 0.01, "lr_first": 1e-3, "decay": 0.8, "theta0": 0.0, "exact": 0.0}


def _setting(text: str) -> dict:
    """"lr=0.01,decay=0.8,theta0=0,exact=0" (any subset; "default" for PoseConfig's)."""
    out = dict(SETTING_KEYS)
    for part in filter(None, text.split(",")):
        if part == "default":
            continue
        k, v = part.split("=")
        if k not in SETTING_KEYS:
            raise SystemExit(f"unknown setting {k!r}; known: {sorted(SETTING_KEYS)}")
        out[k] = float(v)
    return out


def _trajectory(gaussians, camera, query, params0, *, setting, steps, background, objective):
    """Losses [steps + 1] and screws of every iterate (iterate i = after i steps)."""
    sched = functools.partial(fine_lr_schedule, lr_first=setting["lr_first"], lr=setting["lr"],
                              lr_decay=setting["decay"])
    opt = optax.adam(sched, b1=0.9, b2=0.999)
    bg = jnp.asarray(background, jnp.float32)
    exact = bool(setting["exact"])

    def loss_fn(p):
        cam = moved_camera(camera, p, exact_exp=exact)
        rgb, alpha = render(gaussians, cam, background=background)
        return objective(PoseRender(rgb=rgb, alpha=alpha, camera=cam, background=bg), query)

    def step(c, _):
        p, s = c
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), (loss, p)

    (p, _), (losses, ps) = jax.lax.scan(step, (params0, opt.init(params0)), None, length=steps)
    last = loss_fn(p)
    ps = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b[None]]), ps, p)
    return jnp.concatenate([losses, last[None]]), ps


def _starts(cls, g, pc, paths, cache: Path | None, keys: jax.Array):
    """The fine-pose starts of ``paths`` with their ``keys``, read from ``cache`` when it holds
    the same paths and keys (starts drawn with other keys, e.g. another ``--eval-seed``, are
    measured again)."""
    key_data = np.asarray(jax.random.key_data(keys))
    if cache is not None and cache.is_file():
        z = np.load(cache)
        if list(z["paths"]) == paths and "keys" in z and np.array_equal(z["keys"], key_data):
            print(f"starts from {cache}")
            return z["c2w"], float(z["seconds"])
    idx = [list(cls.test.paths).index(p) for p in paths]
    queries = jnp.asarray(np.asarray(cls.test.images)[idx], jnp.float32)
    t0 = time.perf_counter()
    st = pose_starts(g, queries, candidate_cameras(cls.train.cameras, pc), pc,
                     key=keys)
    c2w = camera_to_c2w(st.fine_starts)
    sec = time.perf_counter() - t0
    if cache is not None:
        np.savez(cache, paths=np.array(paths), keys=key_data, c2w=c2w, seconds=sec)
    return c2w, sec


def _rule_index(losses, rule) -> tuple[int, int]:
    """(returned iterate, steps taken) of one query's trajectory under ``rule``."""
    n = losses.shape[0] - 1
    if rule[0] == "fixed":
        stop = min(rule[1], n)
    else:
        p, tol = rule[1], rule[2]
        best = np.minimum.accumulate(losses)
        left = np.flatnonzero(best < losses[0])  # the library's rule: counted from the first iterate beating the start
        stop = n
        for s in range(int(left[0]) + p if left.size else n + 1, n + 1):
            if best[s - p] - best[s] < tol * best[s]:
                stop = s
                break
    return int(np.argmin(losses[: stop + 1])), stop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fine_schedule_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", required=True)
    ap.add_argument("--resolution", type=int, default=200)
    ap.add_argument("--only")
    ap.add_argument("--settings", nargs="+", default=["default"])
    ap.add_argument("--steps", type=int, default=175)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cache")
    ap.add_argument("--json")
    ap.add_argument("--from-truth", action="store_true", help="start at the true poses (the objective's bias)")
    ap.add_argument("--objective", default="photometric", help="fine pose objective (a registered name)")
    ap.add_argument("--eval-seed", type=int, metavar="SEED",
                    help="the keys splatjax evaluate --seed SEED gives each query (starts and screw initialisation)")
    ap.add_argument("--model-queries", type=float, metavar="SIGMA",
                    help="replace each query by the model's own render at its true pose plus Gaussian pixel noise of "
                         "this standard deviation (RGB in [0, 1]; seed 0): the error a perfect model would leave")
    args = ap.parse_args(argv)

    data = Path(args.data)
    cls = load_mad_class(data, args.resolution, test_poses=data / "test_poses.json")
    g = sj.load_ply(resolve_model(args.model))
    paths = list(cls.test.paths)
    if args.only:
        wanted = [ln.strip() for ln in Path(args.only).read_text().splitlines() if ln.strip()]
        paths = [p for p in paths if p in set(wanted)]
    idx = [list(cls.test.paths).index(p) for p in paths]
    queries = jnp.asarray(np.asarray(cls.test.images)[idx], jnp.float32)
    truth = np.asarray(cls.test.c2w)[idx]
    if args.eval_seed is None:
        start_keys = jax.random.split(jax.random.key(0), len(paths))
        screw_keys = jax.random.split(jax.random.key(1), len(paths))
    else:  # evaluate's keys: one per test image of the class, the same for its starts and its screw
        class_keys = jax.random.split(jax.random.key(args.eval_seed), len(cls.test.paths))
        start_keys = screw_keys = class_keys[jnp.asarray(idx)]
    pc = PoseConfig(background=cls.train.background)
    if args.model_queries is not None:
        tc = cls.train.cameras
        fov = 2.0 * np.arctan(0.5 * tc.width / float(np.asarray(tc.fx).reshape(-1)[0]))
        true_cams = cameras_from_c2w(truth, fov, tc.width, tc.height)
        clean = jax.jit(jax.vmap(lambda c: render(g, c, background=pc.background)[0]))(true_cams)
        noise = np.random.default_rng(0).normal(0.0, args.model_queries, np.shape(clean)).astype(np.float32)
        queries = jnp.clip(clean + noise, 0.0, 1.0)
        print(f"queries: the model's renders at the true poses + noise sd {args.model_queries:g}")
    if args.from_truth:
        start_c2w, start_sec = truth, 0.0
    else:
        start_c2w, start_sec = _starts(cls, g, pc, paths, Path(args.cache) if args.cache else None,
                                         start_keys)
    tc = cls.train.cameras
    fov = 2.0 * np.arctan(0.5 * tc.width / float(np.asarray(tc.fx).reshape(-1)[0]))
    starts = cameras_from_c2w(start_c2w, fov, tc.width, tc.height)  # square pixels, centred principal point
    q = len(paths)
    print(f"{data.name}: {q} queries; starts {start_sec / q:.2f} s/query; start rotation median "
          f"{np.median(pose_errors(start_c2w, truth)['rotation_rad']):.4f} rad")
    objective = get_objective(args.objective)
    rules = [("fixed", n) for n in (0, 10, 25, 50, 75, 100, 125, 150, args.steps)]
    rules += [("stall", p, tol) for p in (10, 20, 30) for tol in (1e-4, 3e-4, 1e-3)]
    out = {"data": str(data), "objective": args.objective, "queries": q, "start_seconds_per_query": start_sec / q,
           "paths": list(paths), "settings": {}}
    for text in args.settings:
        setting, lr = _setting(text), text
        fn = jax.jit(jax.vmap(functools.partial(_trajectory, setting=setting, steps=args.steps, background=pc.background,
                                                objective=objective), in_axes=(None, 0, 0, 0)))
        params0 = jax.vmap(lambda k: init_screw(key=k))(screw_keys)
        params0["theta"] = params0["theta"] + setting["theta0"]
        t0 = time.perf_counter()
        losses, screws = [], []
        for a in range(0, q, args.batch):
            sl = slice(a, min(q, a + args.batch))
            pad = args.batch - (sl.stop - sl.start)
            take = lambda x: jnp.concatenate([x[sl]] + [x[sl][-1:]] * pad) if pad else x[sl]  # noqa: E731
            cams = jax.tree_util.tree_map(take, starts)
            ls, ps = fn(g, cams, take(queries), jax.tree_util.tree_map(take, params0))
            losses.append(np.asarray(ls)[: sl.stop - sl.start])
            screws.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[: sl.stop - sl.start], ps))
            print(f"  setting {lr}: {sl.stop}/{q} queries, {time.perf_counter() - t0:.0f} s", flush=True)
        losses = np.concatenate(losses)
        screws = jax.tree_util.tree_map(lambda *x: np.concatenate(x), *screws)
        sec = (time.perf_counter() - t0) / q
        res = {"seconds_per_query": sec, "rules": {}}
        print(f"setting {lr}: {sec:.2f} s/query for {args.steps} steps (compilation included)")
        every = jax.vmap(jax.vmap(lambda c, s: moved_camera(c, s, exact_exp=bool(setting["exact"]))),
                         in_axes=(None, 1), out_axes=1)(starts, jax.tree_util.tree_map(jnp.asarray, screws))
        errs = pose_errors(camera_to_c2w(every).reshape(-1, 4, 4), np.repeat(truth, losses.shape[1], axis=0))
        errs = np.asarray(errs["rotation_rad"]).reshape(q, -1)
        oracle = errs.min(axis=1)
        res["oracle"] = {"median": float(np.median(oracle)), "p90": float(np.percentile(oracle, 90)),
                         "max": float(oracle.max())}
        print(f"  {'oracle':>16}: median {np.median(oracle):.4f}  p90 {np.percentile(oracle, 90):.4f}  "
              f"max {oracle.max():.4f}  (the smallest error of any iterate)")
        for rule in rules:
            picks = [_rule_index(losses[i], rule) for i in range(q)]
            it = np.array([p[0] for p in picks])
            screw = jax.tree_util.tree_map(lambda x: jnp.asarray(x[np.arange(q), it]), screws)
            cams = jax.vmap(lambda c, s: moved_camera(c, s, exact_exp=bool(setting["exact"])))(starts, screw)
            err = pose_errors(camera_to_c2w(cams), truth)["rotation_rad"]
            name = " ".join(str(x) for x in rule)
            taken = np.array([p[1] for p in picks])
            steps = float(np.mean(taken))
            batch_max = float(np.mean([taken[a:a + args.batch].max() for a in range(0, q, args.batch)]))
            res["rules"][name] = {"median": float(np.median(err)), "p90": float(np.percentile(err, 90)),
                                  "max": float(err.max()), "failures": int((err > CONVERGED).sum()), "mean_steps": steps,
                                  "batch_max_steps": batch_max, "errors": [float(e) for e in err]}
            print(f"  {name:>16}: median {np.median(err):.4f}  p90 {np.percentile(err, 90):.4f}  max {err.max():.4f}"
                  f"  >{CONVERGED}: {int((err > CONVERGED).sum())}  mean steps {steps:.0f} (batch max {batch_max:.0f})")
        out["settings"][lr] = res
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
