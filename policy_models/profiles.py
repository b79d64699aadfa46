"""Timing profiles (how long a gang takes) and the quality-vs-steps curve.

A profile maps a gang size k (number of patches = servers) to seconds per denoising step and to the
initialisation (model load) time. Profiles are named so results state which one they used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimingProfile:
    """Seconds per denoising step and model initialisation seconds, per gang size."""

    name: str
    step_s: dict[int, float]
    init_s: dict[int, float]
    # Forming a process group over servers that already hold the model (warm mode); DESIGN: 0.1-0.5 s.
    group_setup_s: float = 0.3
    notes: str = ""
    patch_sizes: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if set(self.step_s) != set(self.init_s):
            raise ValueError(f"profile {self.name}: step_s and init_s must cover the same gang sizes")
        if any(v <= 0 for v in self.step_s.values()) or any(v < 0 for v in self.init_s.values()):
            raise ValueError(f"profile {self.name}: times must be positive")
        object.__setattr__(self, "patch_sizes", tuple(sorted(self.step_s)))

    def run_s(self, patches: int, steps: int, speed: float = 1.0) -> float:
        """Denoising time of `steps` steps on a gang of `patches` servers whose slowest has `speed`."""
        return self.step_s[patches] * steps / speed

    def lookup_arrays(self, max_patches: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense arrays indexed by gang size (0..max_patches) for vectorised code; NaN where undefined."""
        step = np.full(max_patches + 1, np.nan)
        init = np.full(max_patches + 1, np.nan)
        for k in self.patch_sizes:
            if k <= max_patches:
                step[k] = self.step_s[k]
                init[k] = self.init_s[k]
        return step, init


# The constants of the EAT paper's public reference simulator (DESIGN section 2).
REFERENCE = TimingProfile(
    name="reference",
    step_s={1: 0.315, 2: 0.15625, 4: 0.14, 8: 0.1},
    init_s={1: 24.0, 2: 24.0, 4: 32.0, 8: 30.0},
    notes="Constants of the EAT paper's public reference simulator.",
)

# Paper Table VI, measured on RTX 4090s for k = 1, 2, 4. The paper has no k = 8 row: we extrapolate it
# with the reference profile's k=4 -> k=8 ratios (0.1/0.14 per step, 30/32 init) and say so.
PAPER_TABLE_VI = TimingProfile(
    name="paper-table-vi",
    step_s={1: 0.53, 2: 0.29, 4: 0.20, 8: 0.20 * 0.1 / 0.14},
    init_s={1: 33.5, 2: 31.9, 4: 35.0, 8: 35.0 * 30.0 / 32.0},
    notes="EAT paper Table VI (RTX 4090); k=8 extrapolated from k=4 with the reference ratios.",
)

PROFILES: dict[str, TimingProfile] = {p.name: p for p in (REFERENCE, PAPER_TABLE_VI)}
# Profiles shipped with the code; a profile loaded from a file may not take one of these names.
BUILTIN_PROFILES = frozenset(PROFILES)


def get_profile(name: str) -> TimingProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown timing profile {name!r}; known: {sorted(PROFILES)}") from None


# Quality of an image made with s denoising steps, on the CLIP-score scale (DESIGN section 2):
# 0 below 5 steps, 0.16*log6(s) - 0.02 from 5 to 30 steps, flat above. The reference jumps to 0.27 above
# 30 steps; we hold the value reached at 30 (0.2837) instead, so quality never falls as steps grow.
QUALITY_MIN_STEPS = 5
QUALITY_FLAT_FROM = 30
_LOG6 = math.log(6.0)


def quality_of_steps(steps: int) -> float:
    """CLIP-scale quality of `steps` denoising steps (monotone non-decreasing)."""
    if steps < QUALITY_MIN_STEPS:
        return 0.0
    s = min(steps, QUALITY_FLAT_FROM)
    return 0.16 * math.log(s) / _LOG6 - 0.02


def quality_table(max_steps: int) -> np.ndarray:
    """quality_of_steps for 0..max_steps as an array (vectorised code indexes it by steps)."""
    return np.array([quality_of_steps(s) for s in range(max_steps + 1)])


def min_steps_for_quality(threshold: float, max_steps: int) -> int:
    """Fewest steps whose quality reaches `threshold`; max_steps when none does."""
    return _first_steps_reaching(quality_of_steps, threshold, max_steps)


def _first_steps_reaching(quality: Callable[[int], float], threshold: float, max_steps: int) -> int:
    """Fewest steps (1..max_steps) at which `quality` reaches `threshold`; max_steps when none does."""
    for s in range(1, max_steps + 1):
        if quality(s) >= threshold:
            return s
    return max_steps


@dataclass(frozen=True)
class QualityCurve:
    """q(s) = a*ln(s) + b between `min_steps` and `flat_from` steps, 0 below, held flat above.

    The paper's curve is a = 0.16/ln 6, b = -0.02, 5..30 steps (`PAPER_QUALITY`); `eat calibrate` fits
    a and b to scores measured by the evaluator. a >= 0 keeps quality non-decreasing in steps.
    """

    a: float
    b: float
    min_steps: int = QUALITY_MIN_STEPS
    flat_from: int = QUALITY_FLAT_FROM

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError(f"quality curve slope a={self.a} must be >= 0 (quality never falls with steps)")
        if not 1 <= self.min_steps <= self.flat_from:
            raise ValueError(f"need 1 <= min_steps ({self.min_steps}) <= flat_from ({self.flat_from})")

    def __call__(self, steps: int) -> float:
        if steps < self.min_steps:
            return 0.0
        return self.a * math.log(min(steps, self.flat_from)) + self.b

    def table(self, max_steps: int) -> np.ndarray:
        """The curve for 0..max_steps as an array, like `quality_table`."""
        return np.array([self(s) for s in range(max_steps + 1)])


PAPER_QUALITY = QualityCurve(a=0.16 / _LOG6, b=-0.02)

# Profiles loaded from files keep their quality curve here; the simulators, the heuristics and the
# simulated executor read it through the profile_quality* functions below, by profile name.
QUALITY_CURVES: dict[str, QualityCurve] = {}


def profile_quality(profile_name: str) -> Callable[[int], float]:
    """Steps -> quality for a profile: its calibrated curve when one is registered, else the paper's."""
    return QUALITY_CURVES.get(profile_name, quality_of_steps)


def profile_quality_table(profile_name: str, max_steps: int) -> np.ndarray:
    """`profile_quality` for 0..max_steps as an array.

    Without a registered curve this is `quality_table` itself (not PAPER_QUALITY.table, whose a*ln(s)
    rounds differently), so the built-in profiles keep their trajectories bit for bit.
    """
    curve = QUALITY_CURVES.get(profile_name)
    return quality_table(max_steps) if curve is None else curve.table(max_steps)


def profile_min_steps(profile_name: str, threshold: float, max_steps: int) -> int:
    """Fewest steps whose quality on the profile's curve reaches `threshold`; max_steps when none does."""
    return _first_steps_reaching(profile_quality(profile_name), threshold, max_steps)


PROFILE_FORMAT = "eat-timing-profile/1"


def profile_to_json(profile: TimingProfile, quality: QualityCurve | None = None) -> dict[str, Any]:
    """The JSON form `load_profile` reads; gang sizes become string keys as JSON requires."""
    record: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "name": profile.name,
        "step_s": {str(k): v for k, v in sorted(profile.step_s.items())},
        "init_s": {str(k): v for k, v in sorted(profile.init_s.items())},
        "group_setup_s": profile.group_setup_s,
        "notes": profile.notes,
    }
    if quality is not None:
        record["quality"] = {
            "a": quality.a,
            "b": quality.b,
            "min_steps": quality.min_steps,
            "flat_from": quality.flat_from,
        }
    return record


def profile_from_json(record: dict[str, Any]) -> tuple[TimingProfile, QualityCurve | None]:
    """Inverse of `profile_to_json`; extra keys (fit details, sample counts) are ignored."""
    if record.get("format") != PROFILE_FORMAT:
        raise ValueError(f"not a timing profile: format is {record.get('format')!r}, want {PROFILE_FORMAT!r}")
    try:
        profile = TimingProfile(
            name=str(record["name"]),
            step_s={int(k): float(v) for k, v in record["step_s"].items()},
            init_s={int(k): float(v) for k, v in record["init_s"].items()},
            group_setup_s=float(record["group_setup_s"]),
            notes=_notes_text(record.get("notes", "")),
        )
        quality = record.get("quality")
        curve = (
            None
            if quality is None
            else QualityCurve(
                a=float(quality["a"]),
                b=float(quality["b"]),
                min_steps=int(quality["min_steps"]),
                flat_from=int(quality["flat_from"]),
            )
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"malformed timing profile: {err!r}") from err
    return profile, curve


def _notes_text(notes: object) -> str:
    """Notes as one string; a calibrated profile's file keeps them as a list, one per fitted figure."""
    return "; ".join(map(str, notes)) if isinstance(notes, list) else str(notes)


def register_profile(profile: TimingProfile, quality: QualityCurve | None = None) -> None:
    """Make `profile` reachable by name (SimConfig.profile_name); a built-in name cannot be replaced."""
    if profile.name in BUILTIN_PROFILES:
        raise ValueError(f"profile name {profile.name!r} is built in; give the fitted profile another name")
    PROFILES[profile.name] = profile
    if quality is not None:
        QUALITY_CURVES[profile.name] = quality
    else:
        QUALITY_CURVES.pop(profile.name, None)


def load_profile(path: Path) -> TimingProfile:
    """Read a profile JSON file (e.g. written by `eat calibrate`) and register it under its name."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read timing profile {path}: {err}") from err
    if not isinstance(record, dict):
        raise ValueError(f"timing profile {path} is not a JSON object")
    profile, quality = profile_from_json(record)
    register_profile(profile, quality)
    return profile
