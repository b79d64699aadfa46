"""`eat calibrate` end to end on trace files written by the executors' and the evaluator's own code.

The timing lines come from the simulated executor's real rules (`plan_sim_attempt`) and its real line
writer (`timing_record`), with seeded noise in the profile per attempt; the score lines from the
evaluator's `score_records`. Tolerance: fitted timing figures within 5% of the truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from policy_models.profiles import PROFILES, QUALITY_CURVES, REFERENCE, QualityCurve, TimingProfile
from services.calibrate import read_traces
from services.cli import main
from services.evaluator.core import EvalRequest, QualityOutcome, score_records
from services.executor.core import AttemptResult, Dispatch, plan_sim_attempt, timing_record

TRUE = TimingProfile(
    name="truth", step_s={1: 0.5, 2: 0.28, 4: 0.19}, init_s={1: 30.0, 2: 33.0, 4: 36.0}, group_setup_s=0.25
)
TRUE_QUALITY = QualityCurve(a=0.09, b=-0.03)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
NAME = "calibrate-test-cluster"


def noisy(profile: TimingProfile, rng: np.random.Generator) -> TimingProfile:
    factor = float(rng.lognormal(0.0, 0.05))
    return replace(
        profile,
        step_s={k: v * factor for k, v in profile.step_s.items()},
        init_s={k: v * float(rng.lognormal(0.0, 0.05)) for k, v in profile.init_s.items()},
        group_setup_s=profile.group_setup_s * float(rng.lognormal(0.0, 0.05)),
    )


def member_line(dispatch: Dispatch, profile: TimingProfile, resident: bool) -> dict[str, object]:
    plan = plan_sim_attempt(profile, dispatch.gang_size, dispatch.steps, 1.0, resident)
    result = AttemptResult(
        task_id=dispatch.task_id,
        attempt=dispatch.attempt,
        executor_ids=dispatch.members,
        group_id=dispatch.group_id,
        success=True,
        prompt=dispatch.prompt,
        model=dispatch.model,
        steps=dispatch.steps,
        seed=dispatch.seed,
        finished_at=NOW,
        timings=plan.timings(),
        model_reused=plan.model_reused,
        simulated=True,
    )
    return timing_record(dispatch, result)


def write_executor_traces(folder: Path, attempts_per_k: int, seed: int) -> None:
    """One file per executor, as the executors write them: each gang member appends its own line."""
    rng = np.random.default_rng(seed)
    lines: dict[str, list[dict[str, object]]] = {}
    for k in TRUE.patch_sizes:
        for n in range(attempts_per_k):
            members = tuple(f"ex{i}" for i in range(k))
            steps, resident = int(rng.integers(5, 51)), bool(rng.random() > 0.35)
            profile = noisy(TRUE, rng)
            for rank, member in enumerate(members):
                dispatch = Dispatch(f"t{k}-{n}", 1, "a fox", "sd-tiny", steps, 0, members, n, rank)
                lines.setdefault(member, []).append(member_line(dispatch, profile, resident))
    folder.mkdir(parents=True, exist_ok=True)
    for member, records in lines.items():
        text = "".join(json.dumps(record) + "\n" for record in records)
        (folder / f"executor-{member}-timings.jsonl").write_text(text)


def write_scores(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    requests, outcomes = [], []
    for i in range(n):
        steps = int(rng.integers(5, 51))
        requests.append(EvalRequest(f"q{i}", 1, "p", True, False, model="sd-tiny", steps=steps))
        score = TRUE_QUALITY(steps) + float(rng.normal(0.0, 0.01))
        outcomes.append(QualityOutcome(f"q{i}", 1, score, False, "open_clip:tiny", 0.1, NOW))
    path.write_text("".join(json.dumps(line) + "\n" for line in score_records(requests, outcomes)))


@pytest.fixture(autouse=True)
def forget_registered_profiles() -> Iterator[None]:
    yield
    PROFILES.pop(NAME, None)
    QUALITY_CURVES.pop(NAME, None)


def test_calibrate_fits_writes_compares_and_eval_runs_the_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_executor_traces(tmp_path / "state", attempts_per_k=30, seed=1)
    write_scores(tmp_path / "state" / "evaluator-scores.jsonl", 200, seed=2)
    with (tmp_path / "state" / "executor-ex0-timings.jsonl").open("a") as torn:
        torn.write("{torn line\n")  # an executor killed mid-write
    out = tmp_path / "lab.json"
    argv = ["calibrate", "--timings", str(tmp_path / "state"), "--scores", str(tmp_path / "state")]
    assert main([*argv, "--name", NAME, "--out", str(out)]) == 0

    captured = capsys.readouterr()
    assert "| step_s (median) | 4 |" in captured.out and "| fitted/reference |" in captured.out
    assert "| step_s (least squares) | 2 |" in captured.out and "| quality a (per ln step) |" in captured.out
    assert "k=8: step_s and init_s from reference" in captured.out
    assert "skipped 1 unreadable line" in captured.err

    record = json.loads(out.read_text())
    for k in TRUE.patch_sizes:
        assert record["step_s"][str(k)] == pytest.approx(TRUE.step_s[k], rel=0.05)
        assert record["init_s"][str(k)] == pytest.approx(TRUE.init_s[k], rel=0.05)
        assert record["samples"]["step_s"][str(k)] == 30
    assert record["step_s"]["8"] == REFERENCE.step_s[8]
    assert record["group_setup_s"] == pytest.approx(TRUE.group_setup_s, rel=0.05)
    assert record["quality"]["a"] == pytest.approx(TRUE_QUALITY.a, abs=0.01)
    assert record["quality"]["b"] == pytest.approx(TRUE_QUALITY.b, abs=0.01)
    assert record["samples"]["quality"] == 200

    eval_argv = ["eval", "--nodes", "4", "--rates", "0.05", "--policies", "fifo", "--seeds", "1"]
    assert main([*eval_argv, "--profile", NAME, "--profile-file", str(out)]) == 0
    assert f"profile {NAME}" in capsys.readouterr().out

    train_argv = ["train", "--nodes", "4", "--steps", "64", "--envs", "2", "--warmup", "32"]
    train_argv += ["--eval-every", "0"]
    train_argv += ["--checkpoint-every", "0", "--preset", "cpu-fast", "--eval-seeds", "1", "--no-progress"]
    train_argv += ["--out", str(tmp_path / "train"), "--profile", NAME, "--profile-file", str(out)]
    assert main(train_argv) == 0
    (final,) = (tmp_path / "train" / "checkpoints").glob("*/config.json")
    config = json.loads(final.read_text())
    assert NAME in json.dumps(config)  # the checkpoint says which profile it was trained on


def test_too_little_data_fails_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_executor_traces(tmp_path, attempts_per_k=2, seed=3)
    out = tmp_path / "lab.json"
    assert main(["calibrate", "--timings", str(tmp_path), "--name", NAME, "--out", str(out)]) == 2
    assert "too few attempts to fit any step time" in capsys.readouterr().err
    assert not out.exists()
    assert main(["calibrate", "--timings", str(tmp_path / "nowhere"), "--name", NAME, "--out", str(out)]) == 2
    assert "no such trace file" in capsys.readouterr().err
    assert main(["calibrate", "--timings", str(tmp_path), "--name", "reference", "--out", str(out)]) == 2
    assert "built-in" in capsys.readouterr().err


def test_reading_keeps_one_model_when_asked(tmp_path: Path) -> None:
    write_executor_traces(tmp_path, attempts_per_k=3, seed=4)
    everything = read_traces([tmp_path], [])
    assert len(everything.timings) == 3 * (1 + 2 + 4) and not everything.skipped
    assert read_traces([tmp_path], [], model="another-model").timings == []
    first = everything.timings[0]
    assert first.simulated and first.denoise_s == pytest.approx(first.step_mean_s * first.steps)
