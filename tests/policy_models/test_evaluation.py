"""A tiny evaluation end to end: record shape, CI sanity, the lower bound, determinism, CI arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from policy_models.config import paper_config, warm_config
from policy_models.evaluation import (
    Estimate,
    EvalRow,
    SettingKey,
    default_seeds,
    estimate,
    evaluate,
    evaluate_policy,
    make_setting,
    markdown_report,
    paired_gap,
    t_critical_95,
    write_json,
)

POLICIES = ["random", "fifo"]
RECORD_KEYS = {
    "policy",
    "nodes",
    "rate",
    "seeds",
    "quality",
    "response_s",
    "reload_rate",
    "utility",
    "efficiency",
    "unserved",
    "response_ci95",
    "utility_ci95",
    "lower_bound_s",
    # the optional keys we emit
    "mode",
    "profile",
    "tag",
    "ratio_to_lower_bound",
    "response_to_floor",
    "wall_s",
    # SLO attainment per scale (policy_models.slo) and goodput
    *(f"slo_{label}{suffix}" for label in ("1.0x", "1.25x", "1.5x", "2.0x") for suffix in ("", "_ci95")),
    "goodput_per_min",
    "goodput_ci95",
    "deadline_met_interactive",
    "deadline_met_batch",
}


def run_tiny() -> list[EvalRow]:
    return evaluate(POLICIES, [make_setting(4, 0.05)], default_seeds(3))


@pytest.fixture(scope="module")
def rows() -> list[EvalRow]:
    return run_tiny()


def test_one_row_per_policy_with_the_stated_seeds(rows: list[EvalRow]) -> None:
    assert [r.policy for r in rows] == POLICIES
    assert all(r.seeds == (1000, 1001, 1002) and (r.nodes, r.rate) == (4, 0.05) for r in rows)


def test_json_records_have_exactly_the_agreed_keys(rows: list[EvalRow], tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    write_json(rows, path)
    records = json.loads(path.read_text())["rows"]
    assert len(records) == len(POLICIES)
    assert all(set(record) == RECORD_KEYS for record in records)
    assert records[0]["seeds"] == [1000, 1001, 1002]


def test_confidence_intervals_are_finite_and_non_negative(rows: list[EvalRow]) -> None:
    for row in rows:
        for est in (row.quality, row.response_s, row.reload_rate, row.utility, row.efficiency, row.unserved):
            assert math.isfinite(est.mean)
            assert math.isfinite(est.ci95) and est.ci95 >= 0.0


def test_lower_bound_is_below_every_policys_response(rows: list[EvalRow]) -> None:
    for row in rows:
        assert 0.0 < row.lower_bound_s <= row.response_s.mean
        assert row.ratio_to_lower_bound >= 1.0
        # The hindsight floor is tighter than the run-only bound and still under the response.
        assert 1.0 <= row.response_to_floor.mean < row.ratio_to_lower_bound


def test_warm_mode_has_no_floor() -> None:
    (row,) = evaluate(["fifo"], [make_setting(8, 0.1, mode="warm")], default_seeds(2))
    assert math.isnan(row.response_to_floor.mean) and math.isfinite(row.response_s.mean)


def test_two_runs_give_identical_rows(rows: list[EvalRow]) -> None:
    again = run_tiny()
    assert again == rows  # wall times are excluded from equality


def test_ci_matches_a_hand_computed_example() -> None:
    # values 1..5: mean 3, sample sd sqrt(2.5) = 1.5811, t(0.975, df=4) = 2.776
    # half-width = 2.776 * 1.5811 / sqrt(5) = 1.9629
    est = estimate([1.0, 2.0, 3.0, 4.0, 5.0])
    assert est.mean == pytest.approx(3.0)
    assert est.ci95 == pytest.approx(1.9629, abs=1e-3)


def test_ci_edge_cases() -> None:
    assert math.isnan(estimate([2.0]).ci95)
    assert estimate([2.0, 2.0, float("nan")]) == estimate([2.0, 2.0])  # nan samples are left out
    assert t_critical_95(1) == pytest.approx(12.706)
    assert t_critical_95(35) == t_critical_95(30)  # between table rows: the wider interval
    assert t_critical_95(10_000) == pytest.approx(1.960)


def test_markdown_has_a_table_per_metric_with_policy_rows(rows: list[EvalRow]) -> None:
    report = markdown_report(rows)
    assert report.count("| Policy | N=4 λ=0.05 |") == 11
    assert "| random |" in report and "| fifo |" in report
    assert "±" in report


def test_a_paired_gap_is_the_mean_per_seed_difference_and_needs_the_same_workloads() -> None:
    cfg, seeds = paper_config(4, 0.05), (1000, 1001, 1002)
    reuse, fifo = (evaluate_policy(name, cfg, seeds) for name in ("reuse", "fifo"))
    assert len(reuse.seed_utilities) == 3
    assert np.mean(reuse.seed_utilities) == pytest.approx(reuse.utility.mean)
    gap = paired_gap(reuse, fifo)
    assert gap.mean == pytest.approx(reuse.utility.mean - fifo.utility.mean)
    differences = np.subtract(reuse.seed_utilities, fifo.seed_utilities)
    assert gap.ci95 == pytest.approx(estimate(list(differences)).ci95)
    assert paired_gap(reuse, reuse) == Estimate(0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        paired_gap(reuse, evaluate_policy("fifo", cfg, (1000, 1001, 1003)))


def test_slo_attainment_is_a_share_and_grows_with_the_scale(rows: list[EvalRow]) -> None:
    for row in rows:
        means = [est.mean for est in row.slo]
        assert all(0.0 <= m <= 1.0 for m in means)
        assert means == sorted(means)
        assert row.seed_values("slo_1.5") == row.seed_slo[2]
        assert np.mean(row.seed_slo[2]) == pytest.approx(row.slo_at(1.5).mean)


def test_a_paired_gap_in_slo_attainment() -> None:
    cfg, seeds = paper_config(8, 0.1), (1000, 1001, 1002)
    reuse, fifo = (evaluate_policy(name, cfg, seeds) for name in ("reuse", "fifo"))
    gap = paired_gap(reuse, fifo, "slo_1.5")
    assert gap.mean == pytest.approx(reuse.slo_at(1.5).mean - fifo.slo_at(1.5).mean)


def test_settings_are_told_apart_by_mode_and_profile() -> None:
    paper = SettingKey.of(paper_config(8, 0.1))
    assert paper.label == "N=8 λ=0.1"
    assert SettingKey.of(warm_config(8, 0.1)).label == "warm N=8 λ=0.1"
    assert SettingKey.of(paper_config(8, 0.1, profile_name="paper-table-vi")).label == "table-vi N=8 λ=0.1"
    assert SettingKey.of(warm_config(8, 0.1)) != paper
