"""Reuse-heuristic knobs tuned for a suite (`eat tune`, policy_models.tuning), read back for the
policy `reuse:<suite>`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from policy_models.config import SimConfig
from policy_models.policies.heuristics import ReuseAwarePolicy, ReuseKnobs

TUNED_ROOT = Path(__file__).resolve().parents[1] / "tuned"
TUNED_FORMAT = "eat-reuse-knobs/1"


def tuned_path(suite: str, root: Path = TUNED_ROOT) -> Path:
    return root / f"reuse-{suite}.json"


def load_tuned(suite: str, root: Path = TUNED_ROOT) -> ReuseKnobs:
    """The knobs `eat tune` wrote for `suite` (JSON, never pickled); ValueError when there are none."""
    path = tuned_path(suite, root)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"no tuned reuse knobs for suite {suite!r} ({path}): run `eat tune --preset {suite}`"
        ) from err
    if record.get("format") != TUNED_FORMAT:
        raise ValueError(f"{path}: not a tuned-knobs file (format {record.get('format')!r})")
    fields = {f.name for f in dataclasses.fields(ReuseKnobs)}
    knobs = record.get("knobs", {})
    if set(knobs) != fields:
        raise ValueError(f"{path}: knobs must be exactly {sorted(fields)}")
    return ReuseKnobs(**knobs)


def tuned_reuse(suite: str, config: SimConfig) -> ReuseAwarePolicy:
    """The policy `reuse:<suite>`: the reuse heuristic with the knobs tuned for that suite."""
    policy = ReuseAwarePolicy(config, load_tuned(suite))
    policy.name = f"reuse:{suite}"
    return policy
