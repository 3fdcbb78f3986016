"""How the automatic threshold's rule turns into false alarms and recall, on data with labels.

  python scripts/threshold_study.py CLASS --model RUN --eval EVAL_DIR [--resolution 200]
                                    [--cache SCORES.json] [--json OUT.json] [--rescore]
  python scripts/threshold_study.py table OUT1.json OUT2.json ...   (FP / recall per rule and class)

Re-runs the held-out calibration of :mod:`splatjax.app.calibration` for the model (the views
its fit held out and their rolled copies, through the whole pipeline with the default
``PoseConfig`` and ``MapConfig``; the scores of those whose pose is trusted, exactly what
the threshold is set from; cached in ``--cache``), checks that the default rule gives the
threshold of ``EVAL_DIR/report.json`` (an evaluation of the same model with the defaults),
then sets the threshold at the default false-positive rate with each rule of
:data:`RULES` (and "residual-trusted": :func:`residual_trusted`) and applies it to the test
queries' scores of ``EVAL_DIR/per_image.csv`` (as ``evaluate`` does: ANOMALOUS when the
pose is trusted and the score is above the threshold). Prints and writes per rule: the
threshold, the false-positive rate on the good queries and the recall on the defective
ones. Choose on tuning data only. ``--rescore``: the test queries are scored again with
today's default maps at the evaluation's fine poses (``EVAL_DIR/poses.json``; their pose
trust is the evaluation's), so that a map default changed since the evaluation is judged
without estimating the poses again (the threshold check is then skipped: the evaluation's
threshold came from the old maps).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
from splatjax.anomaly.calibration import heldout_threshold  # noqa: E402

RESIDUAL_ALONE = 3.0  # --max-residual-ratio of the rules before the residual rule asked the outline too


def lognormal(s: np.ndarray, fpr: float) -> float:
    """The library's rule (:func:`splatjax.anomaly.heldout_threshold`): a log-normal fitted by
    the mean and sample deviation of the log scores."""
    return heldout_threshold(s, fpr)


def robust_lognormal(s: np.ndarray, fpr: float) -> float:
    """A log-normal fitted by the median and 1.4826 x the median absolute deviation of the log scores."""
    logs = np.log(s)
    med = np.median(logs)
    return float(np.exp(med + norm.ppf(1 - fpr) * 1.4826 * np.median(np.abs(logs - med))))


def trimmed_lognormal(s: np.ndarray, fpr: float) -> float:
    """The log-normal of the scores within 3 robust deviations of the median log score."""
    logs = np.log(s)
    med = np.median(logs)
    mad = 1.4826 * np.median(np.abs(logs - med))
    keep = np.abs(logs - med) <= 3 * mad if mad > 0 else np.ones_like(logs, bool)
    return lognormal(s[keep], fpr) if keep.sum() >= 2 else lognormal(s, fpr)


def prediction_bound(s: np.ndarray, fpr: float, views: int) -> float:
    """The log-normal's upper prediction bound for one new score: mean + t_(n-1) x sd x
    sqrt(1 + 1/n) of the log scores, with n = ``views`` independent samples (the held-out
    views: a view's rolled copies score alike, so they are not independent). Its expected
    false-positive rate is ``fpr`` for log-normal scores, where the plug-in quantile's is
    higher when n is small."""
    from scipy.stats import t

    logs = np.log(s)
    n = max(int(views), 2)
    return float(np.exp(logs.mean() + t.ppf(1 - fpr, n - 1) * logs.std(ddof=1) * np.sqrt(1 + 1 / n)))


def empirical(s: np.ndarray, fpr: float) -> float:
    """The empirical quantile (linear interpolation)."""
    return float(np.quantile(s, 1 - fpr))


RULES = {"lognormal": lognormal, "robust-lognormal": robust_lognormal, "trimmed-lognormal": trimmed_lognormal,
         "empirical": empirical}


class Setting:
    """The class, model, extractor and train-max calibration the default ``evaluate`` would use."""

    def __init__(self, data: Path, model: str, resolution: int):
        import splatjax as sj
        from splatjax.anomaly import MapConfig
        from splatjax.anomaly.features import make_feature_extractor
        from splatjax.app import calibration as cal
        from splatjax.app.runs import resolve_model
        from splatjax.data import load_mad_class

        self.data, self.ply = data, resolve_model(model)
        self.cls = load_mad_class(data, resolution)
        self.g = sj.load_ply(self.ply)
        self.pc, self.mc = sj.PoseConfig(background=self.cls.train.background), MapConfig()
        self.ext = make_feature_extractor(self.mc.features)
        self.base = cal.model_calibration(self.ply, self.g, self.cls.train.cameras, self.cls.train.images,
                                          MapConfig(threshold_rule="train-max"), extractor=self.ext,
                                          pose_config=self.pc)


def rescored(rows: list[dict], eval_dir: Path, setting: "Setting") -> list[dict]:
    """``rows`` (``per_image.csv``) with each test query's score computed again with the
    default maps at its fine pose of ``eval_dir/poses.json`` (see the module doc)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from score_variants import evaluated_poses

    from splatjax.anomaly import compute_maps
    from splatjax.pose import render_views

    test = setting.cls.test
    _, cams = evaluated_poses(eval_dir / "poses.json", setting.data, setting.cls)
    renders = render_views(setting.g, cams, batch_size=setting.pc.batch_size, background=setting.cls.train.background)
    maps = compute_maps(renders, test.images, setting.mc, extractor=setting.ext, residual=setting.base.residual,
                        highlight_cap=setting.base.highlight_cap or None)
    score = dict(zip(test.paths, np.asarray(maps.scores, np.float64)))
    return [{**r, "score": str(score[r["path"]])} for r in rows]


def heldout_scores(data: Path, model: str, resolution: int, setting: "Setting | None" = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scores, median silhouette residuals and outline mismatches (1 - IoU) of the
    held-out queries the silhouette rule trusts
    (:attr:`splatjax.app.calibration.HeldOutScores.references`), as the default ``evaluate``
    measures them."""
    from splatjax.app import calibration as cal

    st = Setting(data, model, resolution) if setting is None else setting
    cls = st.cls
    views = cal.heldout_views(st.ply, cls.train.paths, cls.train.images, cls.train.cameras, st.pc)
    if views is None:
        raise SystemExit(f"{st.ply}: its fit held none of {data}'s training views out")
    held = cal.heldout_scores(st.g, views, st.pc, st.mc, extractor=st.ext, residual=st.base.residual,
                              highlight_cap=st.base.highlight_cap or None)
    ref = held.references
    return held.scores[ref], held.residuals[ref], held.mismatches[ref]


def residual_counted(residuals: np.ndarray, mismatches: np.ndarray | None = None,
                     max_residual_ratio: float | None = None) -> np.ndarray:
    """Mask of the held-out queries (all silhouette-trusted) the residual rule trusts too:
    the library's :meth:`splatjax.app.calibration.HeldOutScores.counted` with
    ``PoseConfig().max_residual_ratio`` (or ``max_residual_ratio``) and
    ``residual_outline_ratio`` (None ``mismatches``: the residual alone, the rule before the
    outline was asked)."""
    from splatjax.app.calibration import HeldOutScores
    from splatjax.pose import PoseConfig

    n, pc = len(residuals), PoseConfig()
    ratio = pc.max_residual_ratio if max_residual_ratio is None else max_residual_ratio
    held = HeldOutScores(scores=np.zeros(n), losses=np.zeros(n), residuals=np.asarray(residuals, np.float64),
                         silhouette_ok=np.ones(n, bool),
                         mismatches=None if mismatches is None else np.asarray(mismatches, np.float64))
    return held.counted(ratio, pc.residual_outline_ratio)


def residual_trusted(scores: np.ndarray, residuals: np.ndarray, fpr: float) -> float:
    """The log-normal of the held-out queries the residual rule would trust too
    (:func:`residual_counted`: median silhouette residual at most ``max_residual_ratio`` x
    the median of them all, the reference the rule applies to test queries), as a test query
    beyond it gets "pose not found" and no score verdict: the library's rule from 0b7c31c
    until the prior on the spread (:func:`residual_trusted_prior`)."""
    return lognormal(scores[residual_counted(residuals, max_residual_ratio=RESIDUAL_ALONE)], fpr)


def residual_trusted_prior(scores: np.ndarray, residuals: np.ndarray, fpr: float, prior_log_sd: float | None = None,
                           prior_views: float | None = None, mismatches: np.ndarray | None = None) -> float:
    """:func:`residual_trusted` with the deviation shrunk toward a prior: the library's rule
    since the prior (:func:`splatjax.anomaly.heldout_rule` with ``MapConfig``'s defaults,
    ``prior_log_sd`` / ``prior_views`` replacing its ``heldout_prior_*`` when given; with the
    held-out ``mismatches``, the residual rule asks the outline too, as the library does)."""
    import dataclasses

    from splatjax.anomaly import MapConfig, heldout_rule

    mc = MapConfig()
    mc = dataclasses.replace(mc, false_positive_rate=fpr,
                             heldout_prior_log_sd=mc.heldout_prior_log_sd if prior_log_sd is None else prior_log_sd,
                             heldout_prior_views=mc.heldout_prior_views if prior_views is None else prior_views)
    return heldout_rule(scores[residual_counted(residuals, mismatches,
                                                None if mismatches is not None else RESIDUAL_ALONE)], mc)[0]


def verdicts(rows: list[dict], threshold: float) -> dict:
    good = [r for r in rows if r["label"] == "0"]
    bad = [r for r in rows if r["label"] == "1"]

    def flagged(r):
        return r["pose_trusted"] == "1" and float(r["score"]) > threshold

    fp, tp = sum(map(flagged, good)), sum(map(flagged, bad))
    return {"threshold": threshold, "false_positives": fp, "good": len(good), "caught": tp, "defective": len(bad),
            "false_positive_rate": fp / max(len(good), 1), "recall": tp / max(len(bad), 1)}


def table(paths: list[Path]) -> str:
    """Per rule, the false positives and recall of each study (``--json`` outputs) and their sums."""
    studies = [(Path(p).name.removesuffix(".json"), json.loads(Path(p).read_text())) for p in paths]
    rules = list(studies[0][1]["rules"])
    head = ["rule", *[n for n, _ in studies], "all: FP", "all: recall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule in rules:
        vs = [st["rules"][rule] for _, st in studies]
        fp, good = sum(v["false_positives"] for v in vs), sum(v["good"] for v in vs)
        tp, bad = sum(v["caught"] for v in vs), sum(v["defective"] for v in vs)
        cells = [f"{v['false_positives']}/{v['good']}, {v['caught']}/{v['defective']}" for v in vs]
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {fp}/{good} = {100 * fp / max(good, 1):.1f} % | "
                     f"{tp}/{bad} = {tp / max(bad, 1):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:  # python scripts/threshold_study.py table A.json B.json ...
        print(table([Path(p) for p in argv[1:]]))
        return 0
    ap = argparse.ArgumentParser(prog="threshold_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", required=True, help="a default evaluate's output folder for this model")
    ap.add_argument("--resolution", type=int, default=200)
    ap.add_argument("--fpr", type=float, default=0.05, help="the target false-positive rate (default: MapConfig's)")
    ap.add_argument("--cache")
    ap.add_argument("--json")
    ap.add_argument("--prior-views", type=float, nargs="*", default=[],
                    help="also the residual-trusted-prior rule with these prior weights (views)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the test queries again with today's default maps at the evaluation's fine poses")
    args = ap.parse_args(argv)
    setting = Setting(Path(args.data), args.model, args.resolution) if args.rescore else None

    cache = Path(args.cache) if args.cache else None
    stored = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    if "mismatches" in stored:  # older caches (no outline mismatches) are measured again
        scores, residuals, mismatches = (np.asarray(stored[k], np.float64) for k in ("scores", "residuals",
                                                                                       "mismatches"))
    else:
        scores, residuals, mismatches = heldout_scores(Path(args.data), args.model, args.resolution, setting)
        if cache is not None:
            cache.write_text(json.dumps({"scores": scores.tolist(), "residuals": residuals.tolist(),
                                         "mismatches": mismatches.tolist()}))
    report = json.loads((Path(args.eval) / "report.json").read_text())
    with open(Path(args.eval) / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    known = {"lognormal (the rule before this study)": lognormal(scores, args.fpr),
             "residual-trusted (the rule of 0b7c31c)": residual_trusted(scores, residuals, args.fpr),
             "residual-trusted-prior (the rule before the outline was asked)": residual_trusted_prior(
                 scores, residuals, args.fpr),
             "residual-and-outline-trusted-prior (the rule since)": residual_trusted_prior(
                 scores, residuals, args.fpr, mismatches=mismatches)}
    if setting is not None:
        rows = rescored(rows, Path(args.eval), setting)
        print("test queries scored again with today's default maps at the evaluation's fine poses")
    else:
        same = [name for name, t in known.items() if np.isclose(t, report["threshold"], rtol=1e-3)]
        if not same:
            raise SystemExit(f"the re-run calibration's thresholds {sorted(known.values())} are not the "
                             f"evaluation's {report['threshold']:.1f}: not the same model, data or defaults")
        print(f"the evaluation's threshold is the {same[0]} one")
    out = {"data": args.data, "heldout_scores": scores.tolist(), "heldout_residuals": residuals.tolist(), "rules": {},
           "test_scores": {r["path"]: float(r["score"]) for r in rows}}
    print(f"{Path(args.data).name}: {scores.size} trusted held-out scores, median {np.median(scores):.0f}, "
          f"max {scores.max():.0f}")
    from splatjax.anomaly import MapConfig

    keep = residual_counted(residuals, mismatches)
    views = round(keep.sum() / (MapConfig().calibration_rolls + 1))  # about one per held-out view
    good = np.log([float(r["score"]) for r in rows if r["label"] == "0" and r["pose_trusted"] == "1"])
    counted = np.log(scores[keep])
    out["counted_log_mean"], out["counted_log_sd"] = float(counted.mean()), float(counted.std(ddof=1))
    out["good_log_mean"], out["good_log_sd"] = float(good.mean()), float(good.std(ddof=1))
    print(f"  log scores: {int(keep.sum())} counted held-out mean {out['counted_log_mean']:.3f} sd "
          f"{out['counted_log_sd']:.3f}; {good.size} trusted good test queries mean {out['good_log_mean']:.3f} sd "
          f"{out['good_log_sd']:.3f}")
    rules = {**RULES, "residual-trusted": lambda s, f: residual_trusted(s, residuals, f),
             "residual-trusted-prediction": lambda s, f: prediction_bound(s[keep], f, views),
             "residual-trusted-prior": lambda s, f: residual_trusted_prior(s, residuals, f),
             "outline-trusted-prior": lambda s, f: residual_trusted_prior(s, residuals, f, mismatches=mismatches)}
    for w in args.prior_views:
        rules[f"prior-views{w:g}"] = lambda s, f, w=w: residual_trusted_prior(s, residuals, f, prior_views=w,
                                                                            mismatches=mismatches)
    for name, rule in rules.items():
        v = verdicts(rows, rule(scores, args.fpr))
        out["rules"][name] = v
        print(f"  {name:>18}: threshold {v['threshold']:8.0f}  FPR {v['false_positives']}/{v['good']}  "
              f"recall {v['caught']}/{v['defective']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
