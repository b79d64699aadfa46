"""`eat calibrate`: read the traces the live cluster recorded, fit a profile, write it, compare it.

The executors append one JSON line per gang member per attempt to `executor-<id>-timings.jsonl` and
the evaluator one per scored real image to `evaluator-scores.jsonl` (both in their state dir). This
module turns those lines into `policy_models.calibration` records, runs the fit and writes the profile
file that `policy_models.profiles.load_profile` reads. A line that cannot be read is skipped and
counted, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from policy_models.calibration import (
    DEFAULT_MIN_SAMPLES,
    Calibration,
    ScoreRecord,
    TimingRecord,
    calibrate,
    calibration_record,
)
from policy_models.profiles import (
    BUILTIN_PROFILES,
    PAPER_QUALITY,
    QUALITY_CURVES,
    QualityCurve,
    TimingProfile,
    get_profile,
)

TIMINGS_GLOB = "executor-*-timings.jsonl"
SCORES_GLOB = "evaluator-scores.jsonl"

Record = TypeVar("Record", TimingRecord, ScoreRecord)


@dataclass
class Traces:
    """Records read from trace files, and the lines that could not be read."""

    timings: list[TimingRecord] = field(default_factory=list)
    scores: list[ScoreRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file:line: why"
    files: list[Path] = field(default_factory=list)


def expand(paths: Iterable[Path], pattern: str) -> list[Path]:
    """Files as given; folders replaced by their files matching `pattern` (sorted, so runs repeat)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob(pattern)))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such trace file or folder: {path}")
    return found


def timing_from_json(line: dict[str, Any]) -> TimingRecord:
    init_s = float(line["init_s"])
    group_setup_s = float(line.get("group_setup_s", 0.0))
    # The executors record denoise_s when they have it; before that, total minus load and group setup.
    denoise_s = line.get("denoise_s", float(line["total_s"]) - init_s - group_setup_s)
    return TimingRecord(
        task_id=str(line["task_id"]),
        attempt=int(line["attempt"]),
        rank=int(line.get("rank", 0)),
        k=int(line["k"]),
        steps=int(line["steps"]),
        init_s=init_s,
        group_setup_s=group_setup_s,
        step_mean_s=float(line["step_mean_s"]),
        denoise_s=float(denoise_s),
        reused=bool(line["reused"]),
        simulated=bool(line.get("simulated", False)),
    )


def score_from_json(line: dict[str, Any]) -> ScoreRecord:
    return ScoreRecord(
        steps=int(line["steps"]),
        clip_score=float(line["clip_score"]),
        task_id=str(line.get("task_id", "")),
        attempt=int(line.get("attempt", 0)),
    )


def _read_lines(
    path: Path, parse: Callable[[dict[str, Any]], Record], model: str | None, skipped: list[str]
) -> list[Record]:
    records: list[Record] = []
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                if model is not None and line.get("model") != model:
                    continue
                records.append(parse(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
                skipped.append(f"{path}:{number}: {err!r}")
    return records


def read_traces(
    timing_paths: Sequence[Path], score_paths: Sequence[Path], model: str | None = None
) -> Traces:
    """Read every timing and score line (of `model` only, when given)."""
    traces = Traces()
    for path in expand(timing_paths, TIMINGS_GLOB):
        traces.files.append(path)
        traces.timings.extend(_read_lines(path, timing_from_json, model, traces.skipped))
    for path in expand(score_paths, SCORES_GLOB):
        traces.files.append(path)
        traces.scores.extend(_read_lines(path, score_from_json, model, traces.skipped))
    return traces


def write_profile(calibration: Calibration, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(calibration_record(calibration), indent=2) + "\n", encoding="utf-8")
    return out


# ----- the comparison table ----------------------------------------------------------------------------
def _ratio(fitted: float, compared: float | None) -> str:
    return f"{fitted / compared:.2f}" if compared else "-"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def comparison_table(calibration: Calibration, compare: TimingProfile, compare_quality: QualityCurve) -> str:
    """Markdown: each fitted figure beside the compared profile's, with the samples behind it."""
    fitted = calibration.profile
    rows = ["| figure | k | fitted | " + compare.name + " | fitted/" + compare.name + " | samples |"]
    rows.append("|---|---|---|---|---|---|")
    for k in fitted.patch_sizes:
        gang = calibration.gangs.get(k)
        rows.append(_row("step_s (median)", k, fitted.step_s[k], compare.step_s.get(k), _n(gang, "step")))
        if gang and gang.step_s_least_squares:
            fit = gang.step_s_least_squares
            rows.append(_row("step_s (least squares)", k, fit.step_s, compare.step_s.get(k), fit.samples))
            rows.append(f"| denoise intercept_s | {k} | {fit.intercept_s:.4g} | - | - | {fit.samples} |")
        rows.append(_row("init_s", k, fitted.init_s[k], compare.init_s.get(k), _n(gang, "init")))
    setups = calibration.group_setup_samples
    rows.append(_row("group_setup_s", "-", fitted.group_setup_s, compare.group_setup_s, setups))
    rows.extend(_quality_rows(calibration, compare_quality))
    return "\n".join(rows)


def _n(gang: Any, which: str) -> int:
    return 0 if gang is None else getattr(gang, f"{which}_samples")


def _row(figure: str, k: object, fitted: float, compared: float | None, samples: int) -> str:
    return f"| {figure} | {k} | {fitted:.4g} | {_figure(compared)} | {_ratio(fitted, compared)} | {samples} |"


def _quality_rows(calibration: Calibration, paper: QualityCurve) -> list[str]:
    quality = calibration.quality
    if quality is None:
        return ["| quality | - | not fitted (no scores) | - | - | 0 |"]
    curve, n = quality.curve, quality.samples
    rows = [
        _row("quality a (per ln step)", "-", curve.a, paper.a, n),
        _row("quality b", "-", curve.b, paper.b, n),
    ]
    rows.append(f"| quality residual rms | - | {quality.residual_rms:.4g} | - | - | {n} |")
    for steps in (curve.min_steps, 10, 20, curve.flat_from):
        rows.append(_row(f"quality at {steps} steps", "-", curve(steps), paper(steps), n))
    return rows


# ----- the whole command -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationRun:
    calibration: Calibration
    traces: Traces
    table: str
    out: Path


def run_calibration(
    timing_paths: Sequence[Path],
    score_paths: Sequence[Path],
    name: str,
    out: Path,
    *,
    compare_name: str = "reference",
    model: str | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> CalibrationRun:
    """Read, fit, write `out`, and build the comparison table. Raises CalibrationError (too little
    data), FileNotFoundError (a missing path) or ValueError (an unknown profile to compare with)."""
    if name in BUILTIN_PROFILES:
        raise ValueError(f"--name {name!r} is a built-in profile; choose another name")
    compare = get_profile(compare_name)
    traces = read_traces(timing_paths, score_paths, model)
    calibration = calibrate(name, traces.timings, traces.scores, compare, min_samples=min_samples)
    write_profile(calibration, out)
    # A profile loaded from a file may carry its own quality curve; the built-in ones use the paper's.
    compare_quality = QUALITY_CURVES.get(compare.name, PAPER_QUALITY)
    return CalibrationRun(calibration, traces, comparison_table(calibration, compare, compare_quality), out)
