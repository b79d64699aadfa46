"""Re-tuning the reuse heuristic's knobs for a suite: never worse than where it starts, saved as JSON,
played back as the policy reuse:<suite>."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from policy_models.config import paper_config
from policy_models.policies import is_heuristic, make_policy
from policy_models.policies.heuristics import ReuseKnobs
from policy_models.policies.tuned import TUNED_ROOT, load_tuned
from policy_models.suites import PRESETS
from policy_models.tuning import knobs_utility, save_tuned, tune_reuse


def test_the_search_keeps_only_improvements_and_reports_them_exactly() -> None:
    settings, seeds = [paper_config(4, 0.07)], (0, 1, 2, 3)
    start = ReuseKnobs(hold_cost=0.05, age_bonus=1.0)  # far from the tuned knobs: room to improve
    result = tune_reuse(settings, seeds, start=start, step=0.5, min_step=0.25)
    assert result.start_utility == pytest.approx(knobs_utility(start, settings, seeds))
    assert result.utility == pytest.approx(knobs_utility(result.knobs, settings, seeds))
    assert result.utility > result.start_utility
    assert result.evaluations > 1


def test_tuned_knobs_round_trip_through_json(tmp_path: Path) -> None:
    settings, seeds = [paper_config(4, 0.05)], (0, 1)
    result = tune_reuse(settings, seeds, step=0.5, min_step=0.5)
    path = save_tuned(result, "paper", seeds, tmp_path)
    assert json.loads(path.read_text())["tuning_seeds"] == [0, 1]
    assert load_tuned("paper", tmp_path) == result.knobs


def test_malformed_tuned_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eat tune --preset nope"):
        load_tuned("nope", tmp_path)
    (tmp_path / "reuse-bad.json").write_text(json.dumps({"format": "eat-reuse-knobs/1", "knobs": {"x": 1}}))
    with pytest.raises(ValueError, match="knobs must be exactly"):
        load_tuned("bad", tmp_path)
    (tmp_path / "reuse-other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a tuned-knobs file"):
        load_tuned("other", tmp_path)


@pytest.mark.parametrize("suite", PRESETS)
def test_each_preset_ships_its_tuned_reuse(suite: str) -> None:
    cfg = paper_config(8, 0.1)
    policy = make_policy(f"reuse:{suite}", cfg)
    record = json.loads((TUNED_ROOT / f"reuse-{suite}.json").read_text())
    assert dataclasses.asdict(policy.knobs) == record["knobs"]
    assert policy.name == f"reuse:{suite}" and is_heuristic(policy.name)
    assert record["utility"] >= record["start_utility"]
