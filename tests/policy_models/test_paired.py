"""Paired comparisons against the best heuristic: hand-made rows with known per-seed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policy_models.config import paper_config
from policy_models.evaluation import Estimate, EvalRow, estimate
from policy_models.paired import (
    BEST,
    best_heuristic,
    comparison_report,
    pooled_gaps,
    setting_gaps,
    verdict_of,
)
from policy_models.suites import SettingGroup, Suite

SEEDS = (1000, 1001, 1002, 1003)
NAN = Estimate(math.nan, math.nan)


def make_row(policy: str, nodes: int, rate: float, utilities: list[float], slo: list[float]) -> EvalRow:
    return EvalRow(
        policy=policy,
        nodes=nodes,
        rate=rate,
        mode="paper",
        profile="reference",
        seeds=SEEDS,
        quality=NAN,
        response_s=NAN,
        reload_rate=NAN,
        utility=estimate(utilities),
        efficiency=NAN,
        unserved=NAN,
        lower_bound_s=math.nan,
        seed_utilities=tuple(utilities),
        slo=(NAN, NAN, estimate(slo), NAN),
        seed_slo=((), (), tuple(slo), ()),
    )


@pytest.fixture
def rows() -> list[EvalRow]:
    return [
        make_row("reuse", 4, 0.05, [9.0, 8.0, 9.0, 8.0], [0.2, 0.1, 0.2, 0.1]),
        make_row("greedy", 4, 0.05, [7.0, 7.0, 7.0, 7.0], [0.1, 0.1, 0.1, 0.1]),
        make_row("mine", 4, 0.05, [9.5, 8.5, 9.5, 8.5], [0.3, 0.2, 0.3, 0.2]),
        # At N=8 greedy is the best heuristic, and "mine" is only tied with it.
        make_row("reuse", 8, 0.1, [6.0, 6.0, 6.0, 6.0], [0.1, 0.1, 0.1, 0.1]),
        make_row("greedy", 8, 0.1, [7.0, 8.0, 7.0, 8.0], [0.2, 0.2, 0.2, 0.2]),
        make_row("mine", 8, 0.1, [8.0, 7.0, 8.0, 7.0], [0.2, 0.2, 0.2, 0.2]),
    ]


def test_the_best_heuristic_has_the_best_mean_among_heuristics_only(rows: list[EvalRow]) -> None:
    assert best_heuristic(rows[:3]).policy == "reuse"  # "mine" is better but no heuristic
    assert best_heuristic(rows[3:]).policy == "greedy"


def test_setting_gaps_are_paired_per_seed(rows: list[EvalRow]) -> None:
    gaps = {(g.policy, g.scope): g for g in setting_gaps(rows)}
    assert set(gaps) == {("greedy", "N=4 λ=0.05"), ("mine", "N=4 λ=0.05"), ("reuse", "N=8 λ=0.1"),
                         ("mine", "N=8 λ=0.1")}  # fmt: skip
    mine4 = gaps[("mine", "N=4 λ=0.05")]
    assert mine4.baseline == "reuse"
    assert mine4.utility == Estimate(0.5, 0.0)  # the same +0.5 on every seed: no spread at all
    assert mine4.slo.mean == pytest.approx(0.1)
    assert mine4.verdict() == "▲"
    mine8 = gaps[("mine", "N=8 λ=0.1")]
    assert mine8.utility.mean == pytest.approx(0.0) and mine8.verdict() == "="
    assert gaps[("reuse", "N=8 λ=0.1")].verdict() == "▼"


def test_pooled_gaps_take_every_seed_of_every_setting(rows: list[EvalRow]) -> None:
    group = SettingGroup("both", "N=4 and N=8", (paper_config(4, 0.05), paper_config(8, 0.1)))
    suite = Suite("test", (group,))
    pooled = {g.policy: g for g in pooled_gaps(rows, suite, BEST)}
    mine = pooled["mine"]
    assert mine.samples == 8
    expected = estimate([0.5, 0.5, 0.5, 0.5, 1.0, -1.0, 1.0, -1.0])
    assert mine.utility == expected
    # The best heuristic against itself counts 0 where it is the best.
    assert pooled["reuse"].samples == 8
    assert np.mean([0, 0, 0, 0, -1, -2, -1, -2]) == pytest.approx(pooled["reuse"].utility.mean)
    against_reuse = {g.policy: g for g in pooled_gaps(rows, suite, "reuse")}
    assert "reuse" not in against_reuse
    assert against_reuse["mine"].utility.mean == pytest.approx(np.mean([0.5] * 4 + [2.0, 1.0, 2.0, 1.0]))


def test_verdicts() -> None:
    assert verdict_of(Estimate(1.0, 0.5)) == "▲"
    assert verdict_of(Estimate(-1.0, 0.5)) == "▼"
    assert verdict_of(Estimate(0.2, 0.5)) == "="
    assert verdict_of(Estimate(0.2, math.nan)) == "?"


def test_the_report_names_the_best_heuristic_of_each_setting(rows: list[EvalRow]) -> None:
    report = comparison_report(rows, None)
    assert "| *best heuristic* | reuse | greedy | |" in report
    assert "| mine | ▲ +0.50 ± 0.00 | = +0.00 ± 1.84 | 1 / 1 / 0 |" in report
