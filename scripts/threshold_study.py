"""How the automatic threshold's rule turns into false alarms and recall, on data with labels.

  python scripts/threshold_study.py CLASS --model RUN --eval EVAL_DIR [--resolution 200]
                                    [--cache SCORES.json] [--json OUT.json]

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
ones. Choose on tuning data only.
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


def heldout_scores(data: Path, model: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The scores and median silhouette residuals of the held-out queries the silhouette
    rule trusts (:attr:`splatjax.app.calibration.HeldOutScores.references`), as the default
    ``evaluate`` measures them."""
    import splatjax as sj
    from splatjax.anomaly import MapConfig
    from splatjax.anomaly.features import make_feature_extractor
    from splatjax.app import calibration as cal
    from splatjax.app.runs import resolve_model
    from splatjax.data import load_mad_class

    ply = resolve_model(model)
    cls = load_mad_class(data, resolution)
    g = sj.load_ply(ply)
    pc, mc = sj.PoseConfig(background=cls.train.background), MapConfig()
    views = cal.heldout_views(ply, cls.train.paths, cls.train.images, cls.train.cameras, pc)
    if views is None:
        raise SystemExit(f"{ply}: its fit held none of {data}'s training views out")
    ext = make_feature_extractor(mc.features)
    base = cal.model_calibration(ply, g, cls.train.cameras, cls.train.images, MapConfig(threshold_rule="train-max"),
                                 extractor=ext, pose_config=pc)
    held = cal.heldout_scores(g, views, pc, mc, extractor=ext, residual=base.residual,
                              highlight_cap=base.highlight_cap or None)
    ref = held.references
    return held.scores[ref], held.residuals[ref]


def residual_counted(residuals: np.ndarray) -> np.ndarray:
    """Mask of the held-out queries (all silhouette-trusted) the residual rule trusts too:
    the library's :meth:`splatjax.app.calibration.HeldOutScores.counted` with
    ``PoseConfig().max_residual_ratio``."""
    from splatjax.app.calibration import HeldOutScores
    from splatjax.pose import PoseConfig

    n = len(residuals)
    held = HeldOutScores(scores=np.zeros(n), losses=np.zeros(n), residuals=np.asarray(residuals, np.float64),
                         silhouette_ok=np.ones(n, bool))
    return held.counted(PoseConfig().max_residual_ratio)


def residual_trusted(scores: np.ndarray, residuals: np.ndarray, fpr: float) -> float:
    """The log-normal of the held-out queries the residual rule would trust too
    (:func:`residual_counted`: median silhouette residual at most ``max_residual_ratio`` x
    the median of them all, the reference the rule applies to test queries), as a test query
    beyond it gets "pose not found" and no score verdict: the library's rule since this
    study."""
    return lognormal(scores[residual_counted(residuals)], fpr)


def verdicts(rows: list[dict], threshold: float) -> dict:
    good = [r for r in rows if r["label"] == "0"]
    bad = [r for r in rows if r["label"] == "1"]

    def flagged(r):
        return r["pose_trusted"] == "1" and float(r["score"]) > threshold

    fp, tp = sum(map(flagged, good)), sum(map(flagged, bad))
    return {"threshold": threshold, "false_positives": fp, "good": len(good), "caught": tp, "defective": len(bad),
            "false_positive_rate": fp / max(len(good), 1), "recall": tp / max(len(bad), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="threshold_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", required=True, help="a default evaluate's output folder for this model")
    ap.add_argument("--resolution", type=int, default=200)
    ap.add_argument("--fpr", type=float, default=0.05, help="the target false-positive rate (default: MapConfig's)")
    ap.add_argument("--cache")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    cache = Path(args.cache) if args.cache else None
    stored = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    if "residuals" in stored:
        scores, residuals = (np.asarray(stored[k], np.float64) for k in ("scores", "residuals"))
    else:
        scores, residuals = heldout_scores(Path(args.data), args.model, args.resolution)
        if cache is not None:
            cache.write_text(json.dumps({"scores": scores.tolist(), "residuals": residuals.tolist()}))
    report = json.loads((Path(args.eval) / "report.json").read_text())
    with open(Path(args.eval) / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    known = {"lognormal (the rule before this study)": lognormal(scores, args.fpr),
             "residual-trusted (the rule since)": residual_trusted(scores, residuals, args.fpr)}
    same = [name for name, t in known.items() if np.isclose(t, report["threshold"], rtol=1e-3)]
    if not same:
        raise SystemExit(f"the re-run calibration's thresholds {sorted(known.values())} are not the evaluation's "
                         f"{report['threshold']:.1f}: not the same model, data or defaults")
    print(f"the evaluation's threshold is the {same[0]} one")
    out = {"data": args.data, "heldout_scores": scores.tolist(), "heldout_residuals": residuals.tolist(), "rules": {}}
    print(f"{Path(args.data).name}: {scores.size} trusted held-out scores, median {np.median(scores):.0f}, "
          f"max {scores.max():.0f}")
    from splatjax.anomaly import MapConfig

    keep = residual_counted(residuals)
    views = round(keep.sum() / (MapConfig().calibration_rolls + 1))  # about one per held-out view
    rules = {**RULES, "residual-trusted": lambda s, f: residual_trusted(s, residuals, f),
             "residual-trusted-prediction": lambda s, f: prediction_bound(s[keep], f, views)}
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
