"""Evaluation suites: what each preset holds."""

from __future__ import annotations

import pytest

from policy_models.config import PAPER_SETTINGS
from policy_models.evaluation import SettingKey, paper_settings
from policy_models.suites import OUTSIDE_RATES, PRESETS, hard_suite, paper_suite, shift_suite, suite


def test_the_paper_suite_is_the_papers_15_settings_in_table_order() -> None:
    assert paper_suite().settings == paper_settings()
    assert paper_suite("warm").settings == paper_settings("warm")


def test_the_shift_suite_holds_its_four_groups() -> None:
    groups = {g.name: g.settings for g in shift_suite().groups}
    assert list(groups) == ["table-vi", "warm", "sizes", "rates"]
    assert [(c.n_servers, c.arrival_rate) for c in groups["table-vi"]] == [
        (c.n_servers, c.arrival_rate) for c in paper_settings()
    ]
    assert {c.profile_name for c in groups["table-vi"]} == {"paper-table-vi"}
    assert {(c.mode, c.n_servers) for c in groups["warm"]} == {("warm", 8)}
    assert len(groups["warm"]) == 7
    assert {c.n_servers for c in groups["sizes"]} == {6, 16}
    assert all(max(c.patch_choices) <= c.n_servers for c in groups["sizes"])


@pytest.mark.parametrize(("nodes", "rates"), OUTSIDE_RATES)
def test_the_rates_group_lies_outside_the_papers_range(nodes: int, rates: tuple[float, ...]) -> None:
    paper_rates = next(r for n, _, r in PAPER_SETTINGS if n == nodes)
    assert all(rate < min(paper_rates) or rate > max(paper_rates) for rate in rates)


def test_settings_are_distinct_and_found_in_their_group() -> None:
    shift = shift_suite()
    keys = [SettingKey.of(cfg) for cfg in shift.settings]
    assert len(set(keys)) == len(keys)
    assert shift.group_of(SettingKey.of(shift.groups[2].settings[0])) == "sizes"
    with pytest.raises(KeyError):
        shift.group_of(SettingKey("paper", "reference", 99, 0.5))


def test_presets_by_name() -> None:
    assert [suite(name).name for name in PRESETS] == list(PRESETS)
    with pytest.raises(ValueError, match="unknown preset"):
        suite("nope")


def test_the_hard_suite_is_heterogeneous_skewed_and_bursty() -> None:
    hard = hard_suite()
    assert [g.name for g in hard.groups] == ["N=8", "N=16", "N=32"]
    for cfg in hard.settings:
        assert cfg.mode == "warm" and cfg.tag == "hard"
        assert 0.5 <= min(cfg.speeds) < max(cfg.speeds) <= 2.0
        assert set(cfg.slots) <= {1, 2, 3} and len(set(cfg.slots)) > 1
        assert 4 <= cfg.n_models <= 6 and cfg.model_weights == tuple(sorted(cfg.model_weights, reverse=True))
        assert cfg.patch_choices == (1, 2, 4, 8)
        assert cfg.arrival_pattern is not None and cfg.arrival_pattern.burst_factor > 1
    # Fixed clusters: the same speeds and memory every time, across the rates of a size.
    assert hard_suite() == hard
    assert len({g.settings[0].server_speeds for g in hard.groups}) == 3
    assert SettingKey.of(hard.settings[0]).label == "hard N=8 λ=0.064"
