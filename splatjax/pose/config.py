"""PoseConfig: every option of the pose stage (coarse retrieval and fine refinement).

Fields with ``metadata["help"]`` become command-line flags (``--coarse-resolution`` for
``coarse_resolution``); the defaults are the reference's (SplatPose's fine pose).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

from ..validation import is_number, require, require_bools, require_choice, require_color, require_ints, require_positive
from ..render.backends import MAX_SUPERSAMPLE, USER_BACKENDS, valid_supersample
from .keypoints import KeypointConfig
from .objectives import get_objective

__all__ = ["PoseConfig"]

FINE_STEPS = 175
COARSE_METHODS = ("auto", "render", "loftr")
MAX_FINE_LEVELS = 4  # the coarsest level at 1/8 of the width


@dataclasses.dataclass(frozen=True)
class PoseConfig:
    """Options of :func:`splatjax.pose.estimate_poses` (all validated on construction).

    Coarse: ``coarse`` picks LoFTR retrieval against the training images, render-and-
    compare retrieval against renders of the model at the candidate poses, or "auto"
    (LoFTR when its weights are found). Candidates are the training cameras plus
    ``sphere_views`` cameras on a sphere and, for render-and-compare,
    ``inplane_rotations`` rolled copies of each. Fine: Adam on the screw for ``steps``
    steps, learning rate ``lr_first`` for the first step then
    ``lr * lr_decay ** (count / 100)``; ``batch_size`` queries per vmapped chunk.
    ``hypotheses``: the K best coarse candidates of every query are all refined (one
    batched run of Q * K refinements) and each query keeps the one with the lowest loss.
    ``keypoints``: before the fine pose, the ``keypoint_candidates`` best retrieval candidates
    of every query are each moved by SIFT matches against a render at the candidate, lifted
    to 3D by the rendered depth, and PnP-RANSAC (:mod:`splatjax.pose.keypoints`, OpenCV; no
    weights) with the options ``keypoint`` (a :class:`KeypointConfig`, flags
    ``--keypoint-width`` etc.), in retrieval order, until ``hypotheses`` of them have at
    least ``polish_stop_inliers`` inliers (the rest are kept as retrieved); the
    ``hypotheses`` with the most PnP inliers go on to the fine pose. Screening (:mod:`splatjax.pose.screen`; on when ``screen_steps`` > 0 and
    ``screen_candidates`` > ``hypotheses``): for a query whose best keypoint candidate has
    fewer than ``screen_skip_inliers`` PnP inliers (textureless, glossy, symmetric parts), the
    ``screen_candidates`` best candidates (most inliers first, retrieval order on ties) are
    each refined ``screen_steps`` steps at width ``screen_resolution`` with rate
    ``screen_lr`` (with ``screen_halving_step`` = s > 0, only the better half of each query's
    candidates by the lowest loss of their first s steps is refined on after them), rendering
    the ``screen_gaussians`` share of the model's Gaussians of highest opacity (at least
    2048, :data:`splatjax.pose.screen.SCREEN_MIN_GAUSSIANS`), and the
    ``hypotheses`` of lowest screened loss go on, from their screened poses, to the fine
    pose's ``steps``. ``background``: the colour the model is rendered
    over (the background it was fitted on, RGB in [0, 1]; the application sets it from the
    fit, it is no flag); ``supersample``: samples per pixel side of the fine pose's and the screening's
    renders of the model (the fit's ``supersample``, set likewise from the fit; the coarse
    retrieval and the keypoint pose, which only pick starts, render one sample per pixel).
    ``min_silhouette_iou``: the trust rule of :mod:`splatjax.pose.trust` (the value chosen
    on the tuning objects bunny, the toy and lego-AD; see BENCHMARKS.md) and
    ``max_residual_ratio`` (the median render-vs-query difference over the silhouettes against
    the held-out views' median; with ``residual_outline_ratio`` > 0 only where the outline
    mismatch 1 - IoU is above that multiple of theirs too) and ``max_loss_ratio`` (the
    final loss against the held-out views' median, asking the outline alike). ``pose_retries``: a query
    whose pose those rules distrust gets the full fine pose from its next ``pose_retries``
    candidates (screening order) that start at least ``retry_angle`` rad from the kept pose and
    from each other, and keeps the lowest loss, ``retry_round`` candidates at a time until the
    pose is trusted (:mod:`splatjax.pose.retry`; applied by the application, which holds the
    rules' references); with ``retry_half_turns`` the kept pose turned half a turn about each
    principal axis of the model follows the screened candidates.
    ``half_turns``: after the fine pose, a query with fewer than ``screen_skip_inliers`` PnP
    inliers has its pose and the pose turned half a turn about each principal axis of the
    model screened alike (the screening's settings), and a turn that screens lower refined in
    full; the lower loss is kept (:mod:`splatjax.pose.half_turn`; needs ``screen_steps`` > 0).
    ``stop_patience`` > 0: a query's fine pose stops once its best loss has improved by
    less than ``stop_tolerance`` (relative) over the last ``stop_patience`` full-resolution
    steps, counted once an iterate has beaten the start (at most ``steps``; the screening
    never stops early).
    ``fine_levels`` > 1: coarse-to-fine steps, the first ``fine_levels - 1`` levels of
    ``fine_level_steps`` steps each at 1/2^(levels-1), ..., 1/2 of the query width (taken
    out of ``steps``), the rest at full resolution. ``objective``: the fine pose's loss, a
    name registered in :mod:`splatjax.pose.objectives` (flag ``--pose-objective``;
    register a name before constructing the config that uses it).
    """

    coarse: str = field(default="auto", metadata={
        "help": "coarse pose: LoFTR retrieval, render-and-compare, or auto (LoFTR when its weights are found)",
        "choices": COARSE_METHODS})
    coarse_resolution: int = field(default=64, metadata={"help": "render-and-compare image width in pixels"})
    # default 8: rolled queries (MAD's test views have arbitrary rolls) find a rolled candidate
    inplane_rotations: int = field(default=8, metadata={
        "help": "extra rolled copies of each coarse candidate (render-and-compare)"})
    sphere_views: int = field(default=0, metadata={"help": "extra coarse candidates on a sphere around the object"})
    loftr_weights: str | None = field(default=None, metadata={"help": "LoFTR indoor_new checkpoint"})
    keypoints: bool = field(default=True, metadata={
        "help": "move the best retrieval candidates by keypoints + rendered depth + PnP-RANSAC before the fine pose"})
    # default 8: see BENCHMARKS.md, lego-AD pose (a rolled query whose 3 best candidates were all wrong)
    keypoint_candidates: int = field(default=8, metadata={
        "help": "retrieval candidates per query moved by the keypoint pose (most PnP inliers first)"})
    # default 12: the inlier count at which screening trusts a candidate (screen_skip_inliers)
    polish_stop_inliers: int = field(default=12, metadata={
        "help": "stop polishing a query's candidates once --hypotheses of them have at least this many PnP "
                "inliers (0: polish all --keypoint-candidates)"})
    keypoint: KeypointConfig = field(default=KeypointConfig(), metadata={
        "help": "keypoint pose options", "prefix": "keypoint_"})
    steps: int = field(default=FINE_STEPS, metadata={"help": "fine pose steps k"})
    # default 8 x 30 steps at 64 px, rate 0.03: chosen on bunny, cow and teapot (BENCHMARKS.md, pose screening)
    screen_candidates: int = field(default=8, metadata={
        "help": "retrieval (after the keypoint polish) candidates per query screened by a short low-resolution "
                "refinement; the lowest screened losses go on to the fine pose (1: no screening)"})
    screen_steps: int = field(default=30, metadata={"help": "refinement steps of the screening (0: no screening)"})
    screen_resolution: int = field(default=64, metadata={"help": "screening image width in pixels"})
    screen_lr: float = field(default=0.03, metadata={"help": "screening learning rate after the first step"})
    # default 10 of 30: the kept candidate was the unhalved screening's in 78 of 79 screened queries of teapot and
    # cow, and in the best half after 10 steps in 79 of 81 of fandisk-7 and beetle-8 (BENCHMARKS.md, screening cost)
    screen_halving_step: int = field(default=10, metadata={
        "help": "after this many screening steps only the better half of a query's candidates (lowest loss so far) "
                "is refined on (0: all --screen-steps on every candidate)"})
    # default 0.25: on beetle-9, suzanne-10 and fandisk-10 (seen) the screening kept a candidate within 0.3 rad in
    # 119 of 126 screened queries (all Gaussians: 121) for 0.36-0.58x its time (BENCHMARKS.md, the screening's
    # Gaussians and the retry's rounds)
    screen_gaussians: float = field(default=0.25, metadata={
        "help": "share of the model's Gaussians the screening renders, the most opaque, at least 2048 (1: all); at "
                "the screening width a step's cost grows with the Gaussians"})
    # default 12: on bunny and cow a candidate with 13-24 inliers was right every time; wrong ones had 0
    screen_skip_inliers: int = field(default=12, metadata={
        "help": "a query whose best keypoint candidate has at least this many PnP inliers is not screened "
                "(0: screen every query)"})
    # default 1: more hypotheses only add fine-pose cost where the best candidate converges (BENCHMARKS.md)
    hypotheses: int = field(default=1, metadata={
        "help": "coarse candidates per query refined at once; the one with the lowest final loss is kept"})
    # default 20 steps, 1e-3: chosen on bunny, cow, teapot and the LegoPose views not in lego-AD (BENCHMARKS.md)
    stop_patience: int = field(default=20, metadata={
        "help": "stop a query's fine pose once its best loss improved by less than --stop-tolerance (relative) "
                "over this many steps, counted once it has beaten its start (0: always --steps steps, as the "
                "reference)"})
    stop_tolerance: float = field(default=1e-3, metadata={
        "help": "relative loss improvement over --stop-patience steps below which the fine pose stops"})
    fine_levels: int = field(default=1, metadata={
        "help": "fine pose resolution levels (1: full resolution only; L: L-1 reduced levels at 1/2^(L-1) .. 1/2 "
                "of the width first)"})
    fine_level_steps: int = field(default=25, metadata={
        "help": "fine pose steps at each reduced-resolution level (taken out of --steps)"})
    objective: str = field(default="photometric", metadata={
        "help": "fine pose objective, a registered name: photometric (SplatPose's 0.8 L1 + 0.2 (1 - SSIM)), "
                "masked_photometric (weighted by the render's alpha), charbonnier (robust L1), or one added "
                "with splatjax.pose.register_objective", "flag": "--pose-objective", "metavar": "NAME"})
    batch_size: int = field(default=16, metadata={"help": "queries refined at once under vmap"})
    exact_exp: bool = field(default=False, metadata={
        "help": "corrected SE(3) exponential instead of the reference's unnormalised screw map"})
    lr_first: float = field(default=1e-3, metadata={"help": "fine pose learning rate of the first step"})
    lr: float = field(default=0.01, metadata={"help": "fine pose learning rate after the first step, before decay"})
    lr_decay: float = field(default=0.8, metadata={"help": "fine pose learning-rate decay per 100 steps"})
    init_std: float = 1e-6  # standard deviation of the screw initialisation (reference)
    init_theta: float = field(default=0.0, metadata={
        "help": "the screw's initial theta with the reference screw map (the reference: 0, where R and t are "
                "bilinear in (w, theta) and (v, theta) and the first steps barely move the pose; 1: about linear in "
                "w and v); --exact-exp always starts at 0"})
    backend: str = field(default="auto", metadata={
        "help": "render backend", "choices": USER_BACKENDS})
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    supersample: int = 1
    min_silhouette_iou: float = field(default=0.85, metadata={
        "help": "a fine pose whose render overlaps the query's silhouette less (IoU of their non-background "
                "pixels) is not trusted: its verdict is 'pose not found' (0: trust every pose)"})
    # default 2: chosen on the evaluations of the first six held-out sets and the tuning objects (BENCHMARKS.md, the
    # residual rule asks the outline too); 3 before, the residual alone
    max_residual_ratio: float = field(default=2.0, metadata={
        "help": "a fine pose whose render differs from the query over the object (median over the silhouettes) more "
                "than this multiple of the median of views held out of the fit is not trusted (0: no residual rule)"})
    # default 3 (2 before): on the seen sets' evaluations a converged pose with a residual over 2 x had an outline
    # mismatch of at most 2.03 x, every wrong basin one of 4.7 x or more (BENCHMARKS.md, half-turn check)
    residual_outline_ratio: float = field(default=3.0, metadata={
        "help": "the residual and loss rules distrust a pose only where its outline disagrees too: 1 - silhouette "
                "IoU above this multiple of the median of views held out of the fit (a large stain or hole raises the "
                "residual and the loss but leaves the outline; a wrong view moves both; 0: the residual or loss "
                "alone)"})
    # default 10: every other screened candidate in another basin (7, 0.3 rad apart: chosen on beetle-9 (seen), where
    # the right basin was the 1st, 3rd and 4th distinct candidate of three flipped queries) and then the pose's three
    # half-turns (--retry-half-turns) (BENCHMARKS.md, a second try for an untrusted pose; the retry refines the
    # half-turns too)
    pose_retries: int = field(default=10, metadata={
        "help": "a query whose fine pose is not trusted gets the full fine pose from its next this many screened "
                "candidates in other basins (--retry-angle apart), then its half-turns (--retry-half-turns), and "
                "keeps the lowest loss (0: no retry)"})
    retry_angle: float = field(default=0.3, metadata={
        "help": "rad: a retried candidate starts at least this far (rotation) from the kept pose and from the other "
                "retried ones"})
    # default 1: on beetle-9 (seen) the right basin was the 1st, 3rd and 4th distinct candidate; rounds of 1 stop
    # there after 1, 3 and 4 refinements (rounds of 2: 2, 4, 4), in chunks of one, which on the CPU cost a
    # refinement's own steps, not the slower of two (BENCHMARKS.md, the screening's Gaussians and the retry's rounds)
    retry_round: int = field(default=1, metadata={
        "help": "retried candidates per query and round: a query whose new pose is trusted stops, the others go on "
                "to the next ones, up to --pose-retries (0: all in one round)"})
    # default on: on beetle-13 (seen) the half-turn check left Burrs/8 half a turn off (its right turn screened
    # 1.08 x the pose), and none of the 7 screened candidates the retry refined was right; that turn refined in full
    # ends 0.0010 rad off at 0.14 x the pose's loss (BENCHMARKS.md, the retry refines the half-turns too)
    retry_half_turns: bool = field(default=True, metadata={
        "help": "the retry of an untrusted pose refines, after the screened candidates, the pose turned half a turn "
                "about each principal axis of the model (all within --pose-retries)"})
    # default on: on the seen evaluations (beetle-9 to -12, suzanne-9 to -12, fandisk-10 to -12) the turn won in the
    # four queries a half-turn off and in none of the converged ones (BENCHMARKS.md, half-turn check)
    half_turns: bool = field(default=True, metadata={
        "help": "after the fine pose, screen each query's pose turned half a turn about each principal axis of the "
                "model (a near-symmetric part converged back to front) and refine a turn that screens lower; the "
                "lower loss is kept (queries with --screen-skip-inliers PnP inliers are not checked)",
        "flag": "--half-turn-check"})
    # default 5.5, asking the outline too (--residual-outline-ratio): on the seen evaluations (beetle-9 to -13,
    # suzanne-10 to -13, fandisk-10 to -13) and the demo toy, the wrong basins the other rules miss had losses of
    # 6.6 x and 8.4 x the held-out views' (outline 4.7 x and 26 x); converged poses with an outline over 3 x at most
    # 4.8 x (the toy's Missing/2, a chunk missing from the outline) (BENCHMARKS.md, the loss rule asks the outline too)
    max_loss_ratio: float = field(default=5.5, metadata={
        "help": "a fine pose whose final loss exceeds this multiple of the median loss of views held out of the fit "
                "(posed likewise; measured in the model's calibration) is not trusted where its outline disagrees "
                "too (--residual-outline-ratio) (0: no loss rule)"})

    def __post_init__(self):
        require_choice(self, "coarse", COARSE_METHODS)
        require_choice(self, "backend", USER_BACKENDS)
        require_ints(self, ("coarse_resolution", "steps", "batch_size", "hypotheses", "fine_levels", "fine_level_steps",
                            "keypoint_candidates", "screen_candidates", "screen_resolution"), 1)
        require_ints(self, ("inplane_rotations", "sphere_views", "screen_steps", "screen_skip_inliers",
                            "screen_halving_step", "polish_stop_inliers", "stop_patience", "pose_retries",
                            "retry_round"), 0)
        require_positive(self, ("lr_first", "lr", "lr_decay", "init_std", "screen_lr", "stop_tolerance",
                                "retry_angle"))
        require(is_number(self.init_theta) and abs(self.init_theta) <= 3.2, self, "init_theta", "in [-3.2, 3.2]")
        require(self.fine_levels <= MAX_FINE_LEVELS, self, "fine_levels", f"<= {MAX_FINE_LEVELS}")
        require(self.fine_levels == 1 or self.steps > (self.fine_levels - 1) * self.fine_level_steps, self, "steps",
                f"more than fine_levels - 1 = {self.fine_levels - 1} reduced levels x fine_level_steps "
                f"{self.fine_level_steps}, so that full-resolution steps remain")
        require(self.lr_decay <= 1.0, self, "lr_decay", "<= 1")
        require(is_number(self.screen_gaussians) and 0.0 < self.screen_gaussians <= 1.0, self, "screen_gaussians",
                "in (0, 1]")
        require(isinstance(self.keypoint, KeypointConfig), self, "keypoint", "a KeypointConfig")
        require_color(self, "background")
        require(valid_supersample(self.supersample), self, "supersample",
                f"an integer in 1..{MAX_SUPERSAMPLE}")
        require(is_number(self.min_silhouette_iou) and 0.0 <= self.min_silhouette_iou <= 1.0, self,
                "min_silhouette_iou", "in [0, 1]")
        require(is_number(self.max_loss_ratio) and self.max_loss_ratio >= 0.0, self, "max_loss_ratio", ">= 0")
        require(is_number(self.residual_outline_ratio) and self.residual_outline_ratio >= 0.0, self,
                "residual_outline_ratio", ">= 0")
        require(is_number(self.max_residual_ratio) and self.max_residual_ratio >= 0.0, self, "max_residual_ratio",
                ">= 0")
        require_bools(self, ("keypoints", "exact_exp", "half_turns", "retry_half_turns"))
        get_objective(self.objective)  # a one-line ConfigError naming the registered objectives
