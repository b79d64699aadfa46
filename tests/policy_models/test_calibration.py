"""Fitting timing profiles and the quality curve: synthetic traces from a known profile come back.

Tolerances: with 5% multiplicative noise (seeded) and 40 attempts per gang size, every fitted timing
figure lies within 5% of the truth and the quality fit's a and b within 0.01 of theirs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from policy_models.calibration import (
    CalibrationError,
    ScoreRecord,
    TimingRecord,
    calibrate,
    calibration_record,
    fit_quality,
)
from policy_models.config import paper_config
from policy_models.profiles import (
    PAPER_QUALITY,
    PROFILES,
    QUALITY_CURVES,
    REFERENCE,
    QualityCurve,
    TimingProfile,
    get_profile,
    load_profile,
    quality_of_steps,
)
from policy_models.sim.env import ClusterEnv

TRUE = TimingProfile(
    name="truth",
    step_s={1: 0.42, 2: 0.23, 4: 0.17},
    init_s={1: 18.0, 2: 21.0, 4: 26.0},
    group_setup_s=0.45,
)
TRUE_OVERHEAD_S = 0.8  # per-attempt time outside the steps (decode), which the line fit's intercept finds
NOISE = 0.05
REL_TOL = 0.05


def synthetic_timings(truth: TimingProfile, attempts_per_k: int, seed: int) -> list[TimingRecord]:
    """Gang members' records as executors write them: every member of an attempt runs at the gang's
    pace; about a third of members load the model cold; warm gangs pay the group setup."""
    rng = np.random.default_rng(seed)
    records: list[TimingRecord] = []
    for k in truth.patch_sizes:
        for attempt in range(attempts_per_k):
            steps = int(rng.integers(5, 51))
            step_mean_s = truth.step_s[k] * rng.lognormal(0.0, NOISE)
            denoise_s = step_mean_s * steps + TRUE_OVERHEAD_S
            cold = bool(rng.random() < 0.35)
            for rank in range(k):
                init_s = truth.init_s[k] * rng.lognormal(0.0, NOISE) if cold else 0.0
                setup_s = truth.group_setup_s * rng.lognormal(0.0, NOISE) if not cold and k > 1 else 0.0
                records.append(
                    TimingRecord(f"t{k}-{attempt}", 1, rank, k, steps, init_s, setup_s, step_mean_s,
                                 denoise_s, reused=not cold)
                )  # fmt: skip
    return records


def synthetic_scores(curve: QualityCurve, n: int, seed: int, noise: float = 0.01) -> list[ScoreRecord]:
    rng = np.random.default_rng(seed)
    steps = rng.integers(curve.min_steps, 51, size=n)
    return [ScoreRecord(int(s), curve(int(s)) + float(rng.normal(0.0, noise))) for s in steps]


def test_a_known_profile_is_fitted_back_within_tolerance() -> None:
    cal = calibrate("fitted", synthetic_timings(TRUE, 40, seed=7), [], compare=REFERENCE)
    fitted = cal.profile
    for k in TRUE.patch_sizes:
        assert fitted.step_s[k] == pytest.approx(TRUE.step_s[k], rel=REL_TOL)
        assert fitted.init_s[k] == pytest.approx(TRUE.init_s[k], rel=REL_TOL)
        line = cal.gangs[k].step_s_least_squares
        assert line is not None and line.samples == 40
        assert line.step_s == pytest.approx(TRUE.step_s[k], rel=REL_TOL)
        assert line.intercept_s == pytest.approx(TRUE_OVERHEAD_S, abs=0.5)
        assert cal.gangs[k].step_samples == 40
    assert fitted.group_setup_s == pytest.approx(TRUE.group_setup_s, rel=REL_TOL)
    assert cal.group_setup_samples > 20


def test_a_gang_size_without_data_falls_back_and_the_notes_say_so() -> None:
    cal = calibrate("fitted", synthetic_timings(TRUE, 40, seed=8), [], compare=REFERENCE)
    # The traces have no k = 8: the reference's figures fill it, so every reference setting still runs.
    assert cal.profile.patch_sizes == (1, 2, 4, 8)
    assert (cal.profile.step_s[8], cal.profile.init_s[8]) == (REFERENCE.step_s[8], REFERENCE.init_s[8])
    assert any("k=8: step_s and init_s from reference" in note for note in cal.notes)
    assert "k=8" in cal.profile.notes


def test_figures_with_too_few_samples_fall_back_one_by_one() -> None:
    all_warm = [r for r in synthetic_timings(TRUE, 40, seed=9) if r.reused]
    cal = calibrate("fitted", all_warm, [], compare=REFERENCE)
    assert cal.profile.step_s[2] == pytest.approx(TRUE.step_s[2], rel=REL_TOL)  # measured
    assert cal.profile.init_s[2] == REFERENCE.init_s[2]  # no cold loads: the reference's
    assert any("k=2: init_s from reference" in note for note in cal.notes)


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(CalibrationError, match="no timing records"):
        calibrate("fitted", [], [], compare=REFERENCE)
    two_attempts = [r for r in synthetic_timings(TRUE, 2, seed=1)]
    with pytest.raises(CalibrationError, match=r"too few attempts .* need 3\+ per gang size"):
        calibrate("fitted", two_attempts, [], compare=REFERENCE)
    one_step_count = [ScoreRecord(20, 0.25), ScoreRecord(20, 0.26), ScoreRecord(20, 0.24)]
    with pytest.raises(CalibrationError, match="2\\+ step counts"):
        fit_quality(one_step_count)
    with pytest.raises(CalibrationError, match="got 0"):
        fit_quality([ScoreRecord(3, 0.1), ScoreRecord(4, 0.12)])  # below the curve's 5 steps


def test_records_read_twice_count_once() -> None:
    records = synthetic_timings(TRUE, 10, seed=3)
    once = calibrate("fitted", records, [], compare=REFERENCE)
    twice = calibrate("fitted", records + records, [], compare=REFERENCE)
    assert twice.gangs == once.gangs and twice.profile == once.profile


def test_the_quality_fit_recovers_a_and_b() -> None:
    truth = QualityCurve(a=0.07, b=0.03, min_steps=5, flat_from=30)
    fit = fit_quality(synthetic_scores(truth, 300, seed=11))
    assert fit.curve.a == pytest.approx(truth.a, abs=0.01)
    assert fit.curve.b == pytest.approx(truth.b, abs=0.01)
    assert fit.residual_rms == pytest.approx(0.01, abs=0.003)  # the noise put in
    assert fit.samples == 300 and not fit.clamped_flat
    # The paper's own curve, noise-free, comes back exactly.
    exact = fit_quality([ScoreRecord(s, quality_of_steps(s)) for s in range(5, 40)])
    assert exact.curve.a == pytest.approx(PAPER_QUALITY.a, abs=1e-9)
    assert exact.curve.b == pytest.approx(PAPER_QUALITY.b, abs=1e-9)
    assert exact.residual_rms < 1e-9


def test_the_quality_curve_stays_monotone() -> None:
    falling = [ScoreRecord(s, 0.3 - 0.05 * math.log(s)) for s in range(5, 31)]
    fit = fit_quality(falling)
    assert fit.clamped_flat and fit.curve.a == 0.0
    assert fit.curve.b == pytest.approx(np.mean([r.clip_score for r in falling]))
    values = [fit.curve(s) for s in range(5, 60)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="must be >= 0"):
        QualityCurve(a=-0.1, b=0.0)
    assert PAPER_QUALITY(40) == PAPER_QUALITY(30) and PAPER_QUALITY(4) == 0.0


def test_a_fitted_profile_round_trips_and_runs_in_the_simulator(tmp_path: Path) -> None:
    scores = synthetic_scores(QualityCurve(a=0.08, b=0.0), 100, seed=5)
    cal = calibrate("lab-cluster-test", synthetic_timings(TRUE, 30, seed=4), scores, compare=REFERENCE)
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(calibration_record(cal)))
    try:
        loaded = load_profile(path)
        assert loaded == cal.profile  # every figure and the notes survive JSON
        assert get_profile("lab-cluster-test") is loaded
        assert cal.quality is not None and QUALITY_CURVES["lab-cluster-test"] == cal.quality.curve
        record = json.loads(path.read_text())
        assert record["samples"]["step_s"] == {"1": 30, "2": 30, "4": 30}
        assert record["samples"]["quality"] == 100 and record["compared_with"] == "reference"

        cfg = paper_config(4, 0.05, profile_name="lab-cluster-test")
        assert cfg.profile.step_s[4] == pytest.approx(TRUE.step_s[4], rel=REL_TOL)
        env = ClusterEnv(cfg)
        env.reset(seed=1)
        finished = 0.0
        for _ in range(40):
            _, reward, terminated, truncated, _ = env.step(np.ones(cfg.action_dim))
            assert math.isfinite(reward)
            finished += reward
            if terminated or truncated:
                break
        assert finished > 0  # tasks ran on the fitted timings and earned reward
    finally:
        PROFILES.pop("lab-cluster-test", None)
        QUALITY_CURVES.pop("lab-cluster-test", None)


def test_loading_refuses_bad_files_and_built_in_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_profile(bad)
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="format"):
        load_profile(bad)
    cal = calibrate("reference", synthetic_timings(TRUE, 5, seed=2), [], compare=REFERENCE)
    bad.write_text(json.dumps(calibration_record(cal)))
    with pytest.raises(ValueError, match="built in"):
        load_profile(bad)
    assert get_profile("reference") is REFERENCE
