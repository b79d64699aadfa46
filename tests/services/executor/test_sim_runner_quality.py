"""The simulated executor reports the quality of its profile's calibrated curve, the paper's without one."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from policy_models.profiles import (
    PROFILES,
    QUALITY_CURVES,
    REFERENCE,
    QualityCurve,
    TimingProfile,
    quality_of_steps,
    register_profile,
)
from services.executor.core import Dispatch, Failure, RunReport
from services.executor.runners import SimRunner

NAME = "sim-runner-quality-test"
CURVE = QualityCurve(a=0.05, b=0.15, min_steps=2, flat_from=12)


@pytest.fixture
def calibrated() -> Iterator[TimingProfile]:
    profile = TimingProfile(name=NAME, step_s=dict(REFERENCE.step_s), init_s=dict(REFERENCE.init_s))
    register_profile(profile, CURVE)
    try:
        yield profile
    finally:
        PROFILES.pop(NAME, None)
        QUALITY_CURVES.pop(NAME, None)


def reported_quality(profile: TimingProfile, steps: int) -> float:
    """simulated_quality of one attempt of `steps` steps, its timer fired at once."""
    calls: list[Callable[[], None]] = []
    runner = SimRunner(
        profile,
        speed_factor=1.0,
        max_resident_models=1,
        time_scale=100.0,
        schedule=lambda _delay, fn: calls.append(fn),
    )
    outcomes: list[RunReport | Failure] = []
    dispatch = Dispatch("t1", 1, "a red fox", "sd-v1-4", steps, 7, ("edge-0",), 11, 0)
    runner.start(dispatch, outcomes.append)
    calls[0]()
    (report,) = outcomes
    assert isinstance(report, RunReport)
    return report.simulated_quality


@pytest.mark.parametrize("steps", [1, 3, 10, 20, 32])
def test_sim_runner_reports_the_calibrated_curve(calibrated: TimingProfile, steps: int) -> None:
    assert reported_quality(calibrated, steps) == CURVE(steps)
    assert reported_quality(REFERENCE, steps) == quality_of_steps(steps)
