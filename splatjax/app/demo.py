"""``demo``: the toy object end to end (generate, fit, evaluate) with printed headline numbers."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..anomaly import MapConfig
from ..files import read_json
from ..fitting import FitConfig
from ..pose import PoseConfig
from .evaluate import evaluate_class
from .logs import console_context
from ..context import Context

__all__ = ["demo", "summary_text", "DEMO_TOY", "DEMO_FIT", "DEMO_POSE", "DEMO_MAP"]

#: The demo's reduced schedule (toy object, CPU): chosen so the whole demo finishes within
#: 5 minutes on a 2-core CPU with the CPU kernel.
DEMO_TOY = {"resolution": 128, "num_train": 100, "num_test_per_type": 6}
DEMO_FIT = FitConfig(iterations=2000, init_points=4000, densify_from=300, densify_until=1600, densify_every=100,
                     opacity_reset_every=3000, capacity=40000, chunk_steps=100, checkpoint_every=100000,
                     val_every=100000, log_every=100, resolution=None)
DEMO_POSE = PoseConfig(coarse="render", coarse_resolution=64, batch_size=6)
DEMO_MAP = MapConfig(features="auto", chunk=6)  # EfficientNet-Lite0 with splatjax[torch]


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def _threshold_source(report: dict) -> str:
    rule = report.get("threshold_rule") or {}
    if rule.get("rule") == "held-out":
        return (f"{rule['describe']} on {rule['heldout_queries']} held-out queries (views held out of the fit, "
                "rolled copies)")
    return "1.5 x the largest training-view score"


def _verdict_line(v: dict) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.0f} %"  # noqa: E731
    return f"{pct(v.get('false_positive_rate'))} of good images flagged, {pct(v.get('recall'))} of defective ones"


def summary_text(report: dict, out: Path, preview: Path) -> str:
    """The demo's printed headline numbers, every one read from the evaluation ``report``
    (``out/eval/report.json``): metrics, median pose errors, threshold, and the times
    (``seconds.total``: the whole evaluation including the fit; ``queries_per_second``:
    test images per second of inference, coarse + fine pose, render and maps)."""
    p = report.get("pose")
    sec = report["seconds"]
    lines = [f"splatjax demo (toy object, {report.get('features', 'n/a')} features)",
             f"  image AUROC  {_fmt(report['image_auroc'])}",
             f"  pixel AUROC  {_fmt(report['pixel_auroc'])}",
             f"  AUPRO        {_fmt(report['aupro'])}"]
    if p:
        lines.append(f"  pose error (median) coarse: translation {p['coarse']['translation']['median']:.4f}, "
                     f"rotation {p['coarse']['rotation_rad']['median']:.4f} rad; fine: translation "
                     f"{p['fine']['translation']['median']:.4f}, rotation {p['fine']['rotation_rad']['median']:.4f} rad")
    fit = f"fit {sec['fit']:.1f} s" if "fit" in report else "fit reused"
    qps = report["queries_per_second"]
    ev = out / "eval"
    lines += [
        f"  threshold    {report['threshold']:.4g} ({_threshold_source(report)}; heatmap scale 0 to "
        f"{report['heatmap_scale'][1]:.4g}); verdicts: {_verdict_line(report.get('verdicts') or {})}",
        f"  time         {sec['total']:.1f} s evaluation in total ({fit}); inference "
        f"{'n/a' if qps is None else format(qps, '.2f')} queries/s over {report['num_test_images']} test images "
        "(coarse + fine pose, render, maps)",
        f"  pictures     {ev / 'heatmaps'}/ (query | render | anomaly map), {ev / 'roc.png'}, "
        f"{ev / 'pose_convergence.png'}",
        f"  toy object   {preview} (training views, each defect type, its defect-free view and mask)",
        f"  report       {ev / 'report.json'}, {ev / 'per_image.csv'}",
    ]
    return "\n".join(lines)


def demo(
    out: str | os.PathLike = "demo_out",
    *,
    seed: int = 0,
    fit_config: FitConfig = DEMO_FIT,
    pose_config: PoseConfig = DEMO_POSE,
    map_config: MapConfig = DEMO_MAP,
    toy: dict | None = None,
    context: Context | None = None,
    say: Callable[[str], object] = print,
) -> dict:
    """The toy object end to end: generate it (``out/toy``, :data:`DEMO_TOY` updated by
    ``toy``), fit it with ``fit_config`` (``out/eval/model``; its seed is ``seed``),
    evaluate with ``map_config`` (default features "auto": EfficientNet-Lite0 when
    ``splatjax[torch]`` is installed, else weights-free; ``out/eval``) and ``say`` the
    headline numbers (:func:`summary_text`; stdout by default; progress and messages go to
    ``context``, stderr by default). Returns the evaluation report (plus ``demo_seconds``: the
    whole demo, toy generation included)."""
    from ..data import make_toy_dataset, write_toy_preview

    out = Path(out)
    context = console_context() if context is None else context
    t_start = time.perf_counter()
    context.say(f"[splatjax demo] 1/3 generating the toy object into {out / 'toy'}")
    data = make_toy_dataset(out / "toy", seed=seed, **{**DEMO_TOY, **(toy or {})})
    preview = write_toy_preview(data, out / "toy_preview.png")
    fit_config = dataclasses.replace(fit_config, seed=seed)
    context.say(f"[splatjax demo] 2/3 fitting {fit_config.iterations} steps, then 3/3 evaluating")
    report = evaluate_class(data, out / "eval", fit_config=fit_config, pose_config=pose_config,
                            map_config=map_config, seed=seed, context=context)
    report = read_json(out / "eval" / "report.json")  # the printed numbers are the report's
    say(summary_text(report, out, preview))
    report["demo_seconds"] = time.perf_counter() - t_start
    return report
