"""Tuning the reuse heuristic's knobs for a suite, so that it is a fair baseline there.

The shipped `ReuseKnobs` were tuned on the paper's 15 settings. A learned policy evaluated on another
suite should face the heuristic at its best on that suite too, so `eat tune` re-tunes the knobs by
coordinate search on tuning seeds (0-63, disjoint from the evaluation seeds 1000 on) over every
setting of the suite, and writes them to `policy_models/tuned/reuse-<suite>.json`; the policy
`reuse:<suite>` plays with them.

Coordinate search: for each continuous knob in turn, try it scaled up and down by the current step
(additive for the exponents), keep a change only when the mean utility over all settings and seeds
rises; after a pass without a change the step halves. The defer switch is tried once at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_models.config import SimConfig
from policy_models.evaluation import first_episodes
from policy_models.policies.heuristics import ReuseAwarePolicy, ReuseKnobs
from policy_models.policies.tuned import TUNED_FORMAT, TUNED_ROOT, tuned_path

TUNING_SEEDS = tuple(range(64))
# (knob, how a step moves it, lowest value): "scale" multiplies by (1 ± step), "shift" adds ± step. The
# hold cost grows with the number of other waiting tasks to `others_power`, which must stay >= 0 (0 ** a
# negative power is infinite when no other task waits).
CONTINUOUS_KNOBS = (("hold_cost", "scale", 0.0), ("age_bonus", "scale", 0.0), ("others_power", "shift", 0.0),
                    ("size_power", "shift", -math.inf))  # fmt: skip


@dataclass(frozen=True)
class TuningResult:
    knobs: ReuseKnobs
    utility: float  # mean utility over the tuning settings and seeds with these knobs
    start_utility: float  # the same with the knobs the search started from
    evaluations: int


def knobs_utility(knobs: ReuseKnobs, settings: Sequence[SimConfig], seeds: Sequence[int]) -> float:
    """Mean utility of the reuse heuristic with `knobs` over every setting and seed (first episodes)."""
    utilities = []
    for cfg in settings:
        policy = ReuseAwarePolicy(cfg, knobs)
        utilities += [episode.utility for episode in first_episodes(policy, cfg, seeds)]
    return float(np.mean(utilities))


def tune_reuse(
    settings: Sequence[SimConfig],
    seeds: Sequence[int] = TUNING_SEEDS,
    start: ReuseKnobs | None = None,
    step: float = 0.5,
    min_step: float = 0.06,
    progress: Callable[[str], None] | None = None,
) -> TuningResult:
    knobs = start or ReuseKnobs()
    best = start_utility = knobs_utility(knobs, settings, seeds)
    evaluations = 1
    while step >= min_step:
        improved = False
        for name, how, lowest in CONTINUOUS_KNOBS:
            for direction in (1.0, -1.0):
                value = getattr(knobs, name)
                moved = value * (1.0 + direction * step) if how == "scale" else value + direction * step
                if moved < lowest:
                    continue
                candidate = dataclasses.replace(knobs, **{name: moved})
                utility = knobs_utility(candidate, settings, seeds)
                evaluations += 1
                if utility > best:
                    knobs, best, improved = candidate, utility, True
                    if progress is not None:
                        progress(f"{name}={moved:.4g}: utility {utility:.4f}")
                    break
        if not improved:
            step /= 2.0
    flipped = dataclasses.replace(knobs, defer=not knobs.defer)
    utility = knobs_utility(flipped, settings, seeds)
    evaluations += 1
    if utility > best:
        knobs, best = flipped, utility
    return TuningResult(knobs, best, start_utility, evaluations)


def save_tuned(result: TuningResult, suite: str, seeds: Sequence[int], root: Path = TUNED_ROOT) -> Path:
    path = tuned_path(suite, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "format": TUNED_FORMAT,
        "suite": suite,
        "knobs": dataclasses.asdict(result.knobs),
        "tuning_seeds": [seeds[0], seeds[-1]],
        "utility": result.utility,
        "start_utility": result.start_utility,
        "evaluations": result.evaluations,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
