"""Named evaluation suites (`eat eval --preset NAME`): groups of settings, fixed seeds, as data.

- `paper`: the EAT paper's 15 settings (Tables IX-XI), in table order.
- `shift`: clusters that differ from the ones the shipped policies and the heuristic's knobs were made
  for: the paper's Table VI timings (RTX 4090: slower steps, longer loads) on the 15 settings; warm mode
  (our executors: models stay resident, servers of three speeds) at N=8 over 7 rates; sizes never
  trained on (N=6 and N=16) at rates of the same load per server as the paper's; and the paper's sizes
  at rates outside its range (lighter and heavier).
- `hard`: heterogeneous warm clusters of 8, 16 and 32 servers (speeds 0.5-2x, memory for 1-3 resident
  models), 4-6 models with Zipf popularity, gangs of 1, 2, 4 or 8, and bursty arrivals (a ramp, then two
  4x bursts), per-task deadlines in two priority classes (interactive at 1.5x the standalone time,
  batch at 4x, with a reward bonus for meeting them), servers that go down or slow down and come back,
  at three loads per server. Fixed clusters
  (`HARD_CLUSTER_SEED`), fixed seeds.

Each group is pooled when a suite is summarised (`policy_models.paired`), so a claim such as "better
under the Table VI profile" rests on every seed of every setting of that group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy_models.config import (
    ArrivalPattern,
    Mode,
    ServerFaults,
    SimConfig,
    SloClasses,
    paper_config,
    warm_config,
)
from policy_models.evaluation import SettingKey, paper_settings

# Evaluation seeds (1000 on) are disjoint from training (100000 on), validation (500 on) and the seeds
# tuning and metaheuristic optimisation use (0-63).
DEFAULT_EVAL_SEEDS = 40


@dataclass(frozen=True)
class SettingGroup:
    name: str
    description: str
    settings: tuple[SimConfig, ...]


@dataclass(frozen=True)
class Suite:
    name: str
    groups: tuple[SettingGroup, ...]

    @property
    def settings(self) -> list[SimConfig]:
        return [cfg for group in self.groups for cfg in group.settings]

    def group_of(self, key: SettingKey) -> str:
        for group in self.groups:
            if any(SettingKey.of(cfg) == key for cfg in group.settings):
                return group.name
        raise KeyError(f"{key.label} is not in suite {self.name!r}")


def paper_suite(mode: Mode = "paper", profile: str = "reference") -> Suite:
    label = "the paper's 15 settings" + ("" if mode == "paper" else f", {mode} mode")
    return Suite("paper", (SettingGroup("paper", label, tuple(paper_settings(mode, profile))),))


WARM_RATES = (0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16)
# Unseen sizes at about the paper's load per server (its middle rates are ~0.0125 x N).
UNSEEN_SIZES = ((6, (0.04, 0.075, 0.11)), (16, (0.14, 0.20, 0.26)))
# The paper's sizes below and above the rates of its tables.
OUTSIDE_RATES = ((4, (0.12, 0.15)), (8, (0.03, 0.18)), (12, (0.07, 0.23)))


def shift_suite() -> Suite:
    return Suite(
        "shift",
        (
            SettingGroup(
                "table-vi",
                "the 15 paper settings under the paper's Table VI timings",
                tuple(paper_settings("paper", "paper-table-vi")),
            ),
            SettingGroup(
                "warm",
                "warm mode, N=8, 7 rates",
                tuple(warm_config(8, rate) for rate in WARM_RATES),
            ),
            SettingGroup(
                "sizes",
                "unseen sizes N=6 and N=16",
                tuple(paper_config(n, rate) for n, rates in UNSEEN_SIZES for rate in rates),
            ),
            SettingGroup(
                "rates",
                "rates outside the paper's range at N=4, 8, 12",
                tuple(paper_config(n, rate) for n, rates in OUTSIDE_RATES for rate in rates),
            ),
        ),
    )


# The hard suite: heterogeneous warm clusters under bursty load.
HARD_SIZES = (8, 16, 32)
HARD_LOADS = (0.008, 0.012, 0.016)  # arrival rate per server (tasks/s); the paper's middle is ~0.0125
HARD_MODELS = {8: 4, 16: 5, 32: 6}
HARD_CLUSTER_SEED = 20260  # draws each size's server speeds and memory, once: the clusters are fixed
HARD_ARRIVALS = ArrivalPattern(ramp_s=120.0, ramp_from=0.3, burst_factor=4.0, burst_s=45.0, bursts=2)
ZIPF_EXPONENT = 1.1
# A fifth of the servers go down for a minute, a quarter run at half speed for two minutes, at times
# drawn over the first 5 minutes of each episode.
HARD_FAULTS = ServerFaults(
    down_share=0.2, down_s=60.0, slow_share=0.25, slow_s=120.0, slow_factor=0.5, window_s=300.0
)
# 40% interactive tasks with deadlines at 1.5x their standalone time (bonus 4), the rest batch at 4x (1).
HARD_SLO = SloClasses(scales=(1.5, 4.0), shares=(0.4, 0.6), bonus=(4.0, 1.0))


def hard_cluster(n_servers: int, rate: float) -> SimConfig:
    """One hard setting: N servers of speeds 0.5-2x (log-uniform) and memory for 1-3 resident models,
    4-6 models asked for with Zipf popularity, gangs of 1, 2, 4 or 8, a ramp and two 4x bursts,
    per-task deadlines in two priority classes (HARD_SLO), and servers that go down or slow down and
    come back (HARD_FAULTS)."""
    rng = np.random.default_rng(HARD_CLUSTER_SEED + n_servers)
    speeds = tuple(round(float(2.0 ** rng.uniform(-1.0, 1.0)), 2) for _ in range(n_servers))
    slots = tuple(int(s) for s in rng.integers(1, 4, n_servers))
    n_models = HARD_MODELS[n_servers]
    return warm_config(
        n_servers,
        rate,
        n_models=n_models,
        models_per_server=max(slots),
        server_slots=slots,
        server_speeds=speeds,
        model_weights=tuple(round(m**-ZIPF_EXPONENT, 4) for m in range(1, n_models + 1)),
        arrival_pattern=HARD_ARRIVALS,
        patch_choices=(1, 2, 4, 8),
        tasks_per_episode=max(32, 2 * n_servers),
        slo_classes=HARD_SLO,
        faults=HARD_FAULTS,
        tag="hard",
    )


def hard_suite() -> Suite:
    return Suite(
        "hard",
        tuple(
            SettingGroup(
                f"N={n}",
                f"{n} servers, {HARD_MODELS[n]} models",
                tuple(hard_cluster(n, round(load * n, 4)) for load in HARD_LOADS),
            )
            for n in HARD_SIZES
        ),
    )


PRESETS = ("paper", "shift", "hard")


def suite(name: str, mode: Mode = "paper", profile: str = "reference") -> Suite:
    """A preset by name; `mode` and `profile` apply to `paper` (the others fix their own)."""
    if name == "paper":
        return paper_suite(mode, profile)
    if name == "shift":
        return shift_suite()
    if name == "hard":
        return hard_suite()
    raise ValueError(f"unknown preset {name!r}; known: {list(PRESETS)}")
