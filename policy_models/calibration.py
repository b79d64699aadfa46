"""Fitting a timing profile and a quality-vs-steps curve to what the live cluster measured.

Pure: it takes plain records (one per gang member per attempt, as the executors write them, and one per
scored image, as the evaluator writes them) and returns a `Calibration`: the fitted `TimingProfile`,
its `QualityCurve`, how many samples stand behind each figure, and notes saying what came from where.
Reading files and printing are `services.calibrate`'s.

Per gang size k:
- step_s is the median over attempts of the gang's mean step time (robust to a slow outlier); when the
  attempts ran at least two different step counts, a least-squares line denoise_s = step_s*steps + c
  is fitted too and reported beside it (c is per-attempt overhead such as decoding).
- init_s is the median of cold loads (members that loaded the model, `reused` false).
- group_setup_s (one figure) is the median over warm gang members (k > 1, reused, no load waited for).
A figure with too few samples falls back to the compared profile's, and the notes say so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from policy_models.profiles import (
    QUALITY_FLAT_FROM,
    QUALITY_MIN_STEPS,
    QualityCurve,
    TimingProfile,
    profile_to_json,
)

# Fewest samples behind a fitted figure; with fewer the compared profile's figure is kept.
DEFAULT_MIN_SAMPLES = 3


class CalibrationError(ValueError):
    """The traces cannot support a fit (no data, or too little of it)."""


@dataclass(frozen=True)
class TimingRecord:
    """One gang member's timings of one attempt (a line of `executor-<id>-timings.jsonl`)."""

    task_id: str
    attempt: int
    rank: int
    k: int
    steps: int
    init_s: float
    group_setup_s: float
    step_mean_s: float
    denoise_s: float
    reused: bool
    simulated: bool = False


@dataclass(frozen=True)
class ScoreRecord:
    """One scored image (a line of `evaluator-scores.jsonl`)."""

    steps: int
    clip_score: float
    task_id: str = ""  # with attempt, identifies a line the evaluator wrote twice (a redelivered result)
    attempt: int = 0


@dataclass(frozen=True)
class LinearStepFit:
    """denoise_s = step_s * steps + intercept_s by least squares over one gang size's attempts."""

    step_s: float
    intercept_s: float
    residual_rms_s: float
    samples: int


@dataclass(frozen=True)
class GangFit:
    """What the traces say about one gang size; None where they say nothing."""

    k: int
    step_s_median: float | None
    step_samples: int
    step_s_least_squares: LinearStepFit | None
    init_s_median: float | None
    init_samples: int


@dataclass(frozen=True)
class QualityFit:
    curve: QualityCurve
    residual_rms: float
    samples: int
    clamped_flat: bool  # the unconstrained slope was negative; a flat curve (a = 0) was fitted instead


@dataclass(frozen=True)
class Calibration:
    profile: TimingProfile
    quality: QualityFit | None
    gangs: dict[int, GangFit]
    group_setup_samples: int
    compared_with: str
    notes: tuple[str, ...] = field(default=())


# ----- timing ------------------------------------------------------------------------------------------
def dedupe(records: Iterable[TimingRecord]) -> list[TimingRecord]:
    """One record per (task, attempt, rank): a file read twice must not count twice."""
    unique: dict[tuple[str, int, int], TimingRecord] = {}
    for record in records:
        unique.setdefault((record.task_id, record.attempt, record.rank), record)
    return list(unique.values())


def dedupe_scores(scores: Iterable[ScoreRecord]) -> list[ScoreRecord]:
    """One score per (task, attempt); lines without a task id are all kept."""
    unique: dict[tuple[str, int], ScoreRecord] = {}
    anonymous: list[ScoreRecord] = []
    for score in scores:
        if score.task_id:
            unique.setdefault((score.task_id, score.attempt), score)
        else:
            anonymous.append(score)
    return [*unique.values(), *anonymous]


@dataclass(frozen=True)
class _Attempt:
    k: int
    steps: int
    step_mean_s: float
    denoise_s: float


def attempts_of(records: Sequence[TimingRecord]) -> list[_Attempt]:
    """Members of one attempt merged: a gang moves at its slowest member's pace, so take the maxima."""
    members: dict[tuple[str, int], list[TimingRecord]] = {}
    for record in records:
        members.setdefault((record.task_id, record.attempt), []).append(record)
    return [
        _Attempt(
            k=gang[0].k,
            steps=gang[0].steps,
            step_mean_s=max(r.step_mean_s for r in gang),
            denoise_s=max(r.denoise_s for r in gang),
        )
        for gang in members.values()
        if gang[0].steps > 0
    ]


def fit_linear_steps(steps: Sequence[int], denoise_s: Sequence[float]) -> LinearStepFit | None:
    """Least squares of denoise time on steps; None unless there are 3+ points at 2+ step counts."""
    if len(steps) < 3 or len(set(steps)) < 2:
        return None
    x = np.asarray(steps, dtype=float)
    y = np.asarray(denoise_s, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return LinearStepFit(
        step_s=float(slope),
        intercept_s=float(intercept),
        residual_rms_s=float(np.sqrt(np.mean(residual**2))),
        samples=len(x),
    )


def _median_or_none(values: Sequence[float], min_samples: int) -> float | None:
    return statistics.median(values) if len(values) >= min_samples else None


def fit_gangs(records: Sequence[TimingRecord], min_samples: int) -> dict[int, GangFit]:
    attempts = attempts_of(records)
    sizes = sorted({r.k for r in records})
    fits: dict[int, GangFit] = {}
    for k in sizes:
        own = [a for a in attempts if a.k == k]
        cold = [r.init_s for r in records if r.k == k and not r.reused]
        fits[k] = GangFit(
            k=k,
            step_s_median=_median_or_none([a.step_mean_s for a in own], min_samples),
            step_samples=len(own),
            step_s_least_squares=fit_linear_steps([a.steps for a in own], [a.denoise_s for a in own]),
            init_s_median=_median_or_none(cold, min_samples),
            init_samples=len(cold),
        )
    return fits


def warm_group_setups(records: Sequence[TimingRecord]) -> list[float]:
    """Group setup of members of warm gangs; a member that waited for a gang-mate's load is not warm."""
    return [r.group_setup_s for r in records if r.k > 1 and r.reused and r.init_s == 0.0]


# ----- quality -----------------------------------------------------------------------------------------
def fit_quality(
    scores: Sequence[ScoreRecord],
    min_steps: int = QUALITY_MIN_STEPS,
    flat_from: int = QUALITY_FLAT_FROM,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> QualityFit:
    """q(s) = a*ln(min(s, flat_from)) + b by least squares over scores with s >= min_steps.

    Scores above flat_from count at flat_from (the curve is flat there, as in the paper). A negative
    slope would make more steps worse, so it is replaced by the best flat curve (a = 0, b = mean).
    """
    usable = [s for s in scores if s.steps >= min_steps and math.isfinite(s.clip_score)]
    x = np.log(np.minimum([s.steps for s in usable], flat_from).astype(float))
    if len(usable) < max(min_samples, 2) or len(set(x.tolist())) < 2:
        raise CalibrationError(
            f"quality fit needs {max(min_samples, 2)}+ scores at 2+ step counts in {min_steps}.."
            f"{flat_from}; got {len(usable)} at {len(set(x.tolist()))} step count(s)"
        )
    y = np.array([s.clip_score for s in usable])
    a, b = (float(v) for v in np.polyfit(x, y, 1))
    clamped = a < 0
    if clamped:
        a, b = 0.0, float(np.mean(y))
    residual = y - (a * x + b)
    return QualityFit(
        curve=QualityCurve(a=a, b=b, min_steps=min_steps, flat_from=flat_from),
        residual_rms=float(np.sqrt(np.mean(residual**2))),
        samples=len(usable),
        clamped_flat=clamped,
    )


# ----- the whole profile -------------------------------------------------------------------------------
def calibrate(
    name: str,
    timings: Iterable[TimingRecord],
    scores: Sequence[ScoreRecord],
    compare: TimingProfile,
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_steps: int = QUALITY_MIN_STEPS,
    flat_from: int = QUALITY_FLAT_FROM,
) -> Calibration:
    """Fit a profile named `name`; figures without enough data come from `compare`.

    Raises CalibrationError when there are no timing records, when no gang size has enough attempts
    for a step time, or when scores are given but cannot support a quality fit.
    """
    records = dedupe(timings)
    if not records:
        raise CalibrationError("no timing records: point --timings at the executors' *-timings.jsonl files")
    gangs = fit_gangs(records, min_samples)
    if all(g.step_s_median is None for g in gangs.values()):
        counts = {k: g.step_samples for k, g in gangs.items()}
        raise CalibrationError(
            f"too few attempts to fit any step time: need {min_samples}+ per gang size, have {counts}"
        )
    notes: list[str] = [_source_note(records)]
    step_s, init_s = _merge_with_fallback(gangs, compare, notes)
    setups = warm_group_setups(records)
    group_setup_s = _median_or_none(setups, min_samples)
    if group_setup_s is None:
        group_setup_s = compare.group_setup_s
        notes.append(
            f"group_setup_s from {compare.name} ({len(setups)} warm gang member(s), need {min_samples})"
        )
    else:
        notes.append(f"group_setup_s: median of {len(setups)} warm gang members (k > 1, reused, no load)")
    scores = dedupe_scores(scores)
    quality = fit_quality(scores, min_steps, flat_from, min_samples) if scores else None
    notes.append(_quality_note(quality))
    profile = TimingProfile(
        name=name, step_s=step_s, init_s=init_s, group_setup_s=group_setup_s, notes="; ".join(notes)
    )
    return Calibration(profile, quality, gangs, len(setups), compare.name, tuple(notes))


def _source_note(records: Sequence[TimingRecord]) -> str:
    simulated = sum(r.simulated for r in records)
    return (
        f"fitted from {len(records)} timing records ({simulated} from simulated executors); "
        "step_s: median over attempts of the gang's mean step time; init_s: median of cold loads"
    )


def _merge_with_fallback(
    gangs: dict[int, GangFit], compare: TimingProfile, notes: list[str]
) -> tuple[dict[int, float], dict[int, float]]:
    """Fitted figures where there are any, the compared profile's elsewhere; every gang size the
    compared profile knows stays, so the fitted profile runs every setting the compared one does."""
    step_s: dict[int, float] = {}
    init_s: dict[int, float] = {}
    for k in sorted(set(gangs) | set(compare.patch_sizes)):
        gang = gangs.get(k)
        step = gang.step_s_median if gang else None
        init = gang.init_s_median if gang else None
        if (step is None and k not in compare.step_s) or (init is None and k not in compare.init_s):
            notes.append(f"k={k} dropped: too little data and {compare.name} has no figure for it")
            continue
        step_s[k] = step if step is not None else compare.step_s[k]
        init_s[k] = init if init is not None else compare.init_s[k]
        fallen_back = [label for label, value in (("step_s", step), ("init_s", init)) if value is None]
        if fallen_back:
            notes.append(f"k={k}: {' and '.join(fallen_back)} from {compare.name} (too little data)")
    return step_s, init_s


def _quality_note(quality: QualityFit | None) -> str:
    if quality is None:
        return "quality curve: no scores given, none fitted"
    curve = quality.curve
    flat = "; slope was negative, fitted flat (a = 0)" if quality.clamped_flat else ""
    return (
        f"quality: q(s) = a*ln(s) + b by least squares over {quality.samples} evaluator scores, "
        f"{curve.min_steps}..{curve.flat_from} steps (scores above counted at {curve.flat_from}){flat}"
    )


def calibration_record(calibration: Calibration) -> dict[str, Any]:
    """The profile file: what `load_profile` reads, plus the fit details and sample counts behind it."""
    quality = calibration.quality
    record = profile_to_json(calibration.profile, quality.curve if quality else None)
    if quality is not None:
        record["quality"] |= {
            "form": "a*ln(s) + b (natural log), 0 below min_steps, flat from flat_from",
            "residual_rms": quality.residual_rms,
            "clamped_flat": quality.clamped_flat,
        }
    gangs = calibration.gangs
    record["samples"] = {
        "step_s": {str(k): g.step_samples for k, g in sorted(gangs.items())},
        "init_s": {str(k): g.init_samples for k, g in sorted(gangs.items())},
        "group_setup_s": calibration.group_setup_samples,
        "quality": quality.samples if quality else 0,
    }
    record["step_s_least_squares"] = {
        str(k): asdict(g.step_s_least_squares) for k, g in sorted(gangs.items()) if g.step_s_least_squares
    }
    record["compared_with"] = calibration.compared_with
    record["notes"] = list(calibration.notes)
    return record
