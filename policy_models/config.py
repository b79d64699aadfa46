"""Simulator and reward settings: plain frozen dataclasses, constructor arguments = the config."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from policy_models.profiles import TimingProfile, get_profile

Mode = Literal["paper", "warm"]


@dataclass(frozen=True)
class RewardConfig:
    """Reward on launching a task (DESIGN section 2, EAT paper eq. 4 and V-A4).

    r = min(cap, w_t / (w_tt * A + exec_s + wait_s)) + w_q * quality - penalty * [quality < threshold]
    where A is the mean waiting time of the visible queue after the launch. Waiting earns 0.
    """

    w_t: float = 250.0
    w_tt: float = 1.0
    w_q: float = 10.0
    time_cap: float = 10.0
    # Minimum acceptable quality (CLIP scale). The reference applies no penalty (penalty=0); the threshold
    # still defines the lower bound on response time and the "below threshold" count.
    quality_threshold: float = 0.25
    penalty: float = 0.0


@dataclass(frozen=True)
class ArrivalPattern:
    """Arrivals that are not a steady Poisson stream: a ramp up, then bursts.

    The arrival rate at time t is `arrival_rate` x ramp(t) x burst(t): ramp(t) climbs from `ramp_from`
    at t=0 to 1 at `ramp_s` (in steps of `grid_s`), and burst(t) is `burst_factor` inside any of
    `bursts` windows of `burst_s` seconds whose starts are drawn uniformly over the first `window_s`
    seconds of each episode, 1 elsewhere. The rate is constant on each `grid_s` step, so arrivals are an
    exact inhomogeneous Poisson process (a unit-rate one mapped through the inverse cumulative rate).
    """

    ramp_s: float = 0.0
    ramp_from: float = 1.0
    burst_factor: float = 1.0
    burst_s: float = 0.0
    bursts: int = 0
    window_s: float = 300.0
    grid_s: float = 1.0

    def __post_init__(self) -> None:
        if self.ramp_s < 0 or not 0 < self.ramp_from <= 1:
            raise ValueError("ArrivalPattern needs ramp_s >= 0 and 0 < ramp_from <= 1")
        if self.burst_factor <= 0 or self.burst_s < 0 or self.bursts < 0 or self.window_s <= 0:
            raise ValueError("ArrivalPattern needs burst_factor > 0, burst_s >= 0, bursts >= 0, window_s > 0")
        if self.grid_s <= 0:
            raise ValueError("ArrivalPattern needs grid_s > 0")


@dataclass(frozen=True)
class ServerFaults:
    """Servers that go down and come back, or slow down, during an episode (warm mode).

    Each server, independently, goes down once with probability `down_share`, at a time drawn uniformly
    over the first `window_s` seconds, for `down_s` seconds: no task starts on it until it is back (a
    task it is running finishes, and it is back at the later of the two). Independently it slows down
    once with probability `slow_share`, from a uniform time in the window for `slow_s` seconds, to
    `slow_factor` x its speed: a gang started meanwhile runs at the slowed speed, and the server's token
    shows it. Each episode draws its own faults.
    """

    down_share: float = 0.0
    down_s: float = 60.0
    slow_share: float = 0.0
    slow_s: float = 120.0
    slow_factor: float = 0.5
    window_s: float = 300.0

    def __post_init__(self) -> None:
        if not (0 <= self.down_share <= 1 and 0 <= self.slow_share <= 1):
            raise ValueError("ServerFaults needs shares in [0, 1]")
        if self.down_s <= 0 or self.slow_s <= 0 or self.window_s <= 0 or not 0 < self.slow_factor <= 1:
            raise ValueError("ServerFaults needs positive durations and a slow factor in (0, 1]")


@dataclass(frozen=True)
class SloClasses:
    """Per-task deadlines in two priority classes: 0 = interactive (tight), 1 = batch (loose).

    Each task draws its class (probability `shares`); its deadline is its arrival plus the class's
    `scales` x its standalone time (policy_models.slo). A launch that will finish by the deadline earns
    the class's `bonus` on top of the EAT reward, so the reward a scheduler maximises values SLOs, the
    interactive ones most. Tasks show their class and the time left to their deadline (two extra task
    features: policy_models.obs.SLO_TASK_FEATURES).
    """

    scales: tuple[float, float] = (1.5, 4.0)
    shares: tuple[float, float] = (0.4, 0.6)
    bonus: tuple[float, float] = (4.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.scales) != 2 or len(self.shares) != 2 or len(self.bonus) != 2:
            raise ValueError("SloClasses has exactly two classes (interactive, batch)")
        if min(self.scales) <= 0 or min(self.shares) < 0 or abs(sum(self.shares) - 1.0) > 1e-9:
            raise ValueError("SloClasses needs positive scales and shares that sum to 1")
        if min(self.bonus) < 0:
            raise ValueError("SloClasses needs bonuses >= 0")


@dataclass(frozen=True)
class SimConfig:
    """One simulated cluster and its workload."""

    n_servers: int = 4
    arrival_rate: float = 0.05
    mode: Mode = "paper"
    patch_choices: tuple[int, ...] = (1, 2, 4)
    tasks_per_episode: int = 32
    initial_tasks: int = 10
    visible_queue: int = 10
    time_limit_s: float = 1024.0
    min_steps: int = 1
    max_steps: int = 32
    profile_name: str = "reference"
    # None = event-driven decision epochs (an arrival, a gang finishing); a float = fixed tick (paper: 0.1).
    tick_s: float | None = None
    # Event-driven mode: a scheduler that waits is asked again at the next event or after this many
    # seconds, whichever comes first (the live aggregator's decision timer); without it a wait with
    # nothing pending would never end.
    recheck_s: float = 5.0
    max_decisions: int = 1024
    # warm mode: how many model types tasks ask for, and how many each server keeps resident.
    n_models: int = 1
    models_per_server: int = 1
    # Per-server speed factors (1.0 = the profile's speed); None = all 1.0.
    server_speeds: tuple[float, ...] | None = None
    # warm mode: per-server resident-model slots (servers with more memory hold more models);
    # None = models_per_server on every server.
    server_slots: tuple[int, ...] | None = None
    # Relative popularity of models 1..n_models (tasks ask for model m with probability w_m / sum w);
    # None = uniform.
    model_weights: tuple[float, ...] | None = None
    # None = Poisson arrivals at arrival_rate; else a ramp and bursts on top of it.
    arrival_pattern: ArrivalPattern | None = None
    # None = no per-task deadlines (SLO attainment is still measured at fixed scales).
    slo_classes: SloClasses | None = None
    # None = servers never fail or slow down.
    faults: ServerFaults | None = None
    reward: RewardConfig = field(default_factory=RewardConfig)
    # A name for reports (e.g. "hard"): tells settings of one size, rate and mode apart in a table; it has
    # no effect on the simulation.
    tag: str = ""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid SimConfig: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if self.mode not in ("paper", "warm"):
            yield f"mode must be 'paper' or 'warm', not {self.mode!r}"
        if self.n_servers < 1:
            yield "n_servers must be >= 1"
        if self.arrival_rate <= 0:
            yield "arrival_rate must be > 0"
        if not self.patch_choices or max(self.patch_choices) > self.n_servers or min(self.patch_choices) < 1:
            yield f"patch_choices {self.patch_choices} must lie in 1..n_servers={self.n_servers}"
        missing = set(self.patch_choices) - set(get_profile(self.profile_name).patch_sizes)
        if missing:
            yield f"profile {self.profile_name!r} has no timings for gang sizes {sorted(missing)}"
        if not 0 <= self.initial_tasks <= self.tasks_per_episode:
            yield "initial_tasks must lie in 0..tasks_per_episode"
        if self.visible_queue < 1:
            yield "visible_queue must be >= 1"
        if not 1 <= self.min_steps <= self.max_steps:
            yield "need 1 <= min_steps <= max_steps"
        if self.tick_s is not None and self.tick_s <= 0:
            yield "tick_s must be > 0 or None"
        if self.recheck_s <= 0:
            yield "recheck_s must be > 0"
        if self.n_models < 1 or self.models_per_server < 1:
            yield "n_models and models_per_server must be >= 1"
        if self.mode == "paper" and self.models_per_server != 1:
            yield "paper mode holds one model per server group (models_per_server=1)"
        if self.server_speeds is not None and (
            len(self.server_speeds) != self.n_servers or min(self.server_speeds) <= 0
        ):
            yield "server_speeds needs one positive factor per server"
        if self.server_slots is not None:
            if self.mode != "warm":
                yield "server_slots is a warm-mode setting (paper mode holds one model per group)"
            if len(self.server_slots) != self.n_servers or min(self.server_slots) < 1:
                yield "server_slots needs one slot count >= 1 per server"
            elif max(self.server_slots) != self.models_per_server:
                yield "models_per_server must be the largest of server_slots"
        if self.faults is not None and (
            self.mode != "warm" or self.tick_s is not None or self.initial_tasks == 0
        ):
            yield "faults need warm mode, event-driven decisions and tasks waiting at t=0"
        if self.model_weights is not None and (
            len(self.model_weights) != self.n_models or min(self.model_weights) <= 0
        ):
            yield "model_weights needs one positive weight per model"

    @property
    def profile(self) -> TimingProfile:
        return get_profile(self.profile_name)

    @property
    def speeds(self) -> tuple[float, ...]:
        return self.server_speeds or (1.0,) * self.n_servers

    @property
    def slots(self) -> tuple[int, ...]:
        """Resident-model slots of each server."""
        return self.server_slots or (self.models_per_server,) * self.n_servers

    @property
    def max_patches(self) -> int:
        return max(self.patch_choices)

    @property
    def action_dim(self) -> int:
        """execute flag, steps, one score per visible task."""
        return 2 + self.visible_queue

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        data = dict(data)
        data["reward"] = RewardConfig(**data.get("reward", {}))
        if data.get("arrival_pattern") is not None:
            data["arrival_pattern"] = ArrivalPattern(**data["arrival_pattern"])
        if data.get("faults") is not None:
            data["faults"] = ServerFaults(**data["faults"])
        if data.get("slo_classes") is not None:
            data["slo_classes"] = SloClasses(**{k: tuple(v) for k, v in data["slo_classes"].items()})
        for key in ("patch_choices", "server_speeds", "server_slots", "model_weights"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# The paper's Tables IX-XI: (servers, patch choices, arrival rates).
PAPER_SETTINGS: tuple[tuple[int, tuple[int, ...], tuple[float, ...]], ...] = (
    (4, (1, 2, 4), (0.01, 0.03, 0.05, 0.07, 0.09)),
    (8, (1, 2, 4, 8), (0.06, 0.08, 0.10, 0.12, 0.14)),
    (12, (1, 2, 4, 8), (0.11, 0.13, 0.15, 0.17, 0.19)),
)


def paper_configs(**overrides: Any) -> list[SimConfig]:
    """The 15 settings of the paper's tables, in table order."""
    return [
        SimConfig(n_servers=n, patch_choices=patches, arrival_rate=rate, **overrides)
        for n, patches, rates in PAPER_SETTINGS
        for rate in rates
    ]


def paper_config(n_servers: int, arrival_rate: float, **overrides: Any) -> SimConfig:
    """A paper-mode cluster; patch choices as in the paper's tables ({1,2,4} at N=4, else {1,2,4,8})."""
    patches = (1, 2, 4) if n_servers == 4 else tuple(k for k in (1, 2, 4, 8) if k <= n_servers)
    overrides.setdefault("patch_choices", patches)
    return SimConfig(n_servers=n_servers, arrival_rate=arrival_rate, **overrides)


def warm_config(n_servers: int = 8, arrival_rate: float = 0.1, **overrides: Any) -> SimConfig:
    """A warm-mode cluster: 3 model types, 2 resident per server, servers of three speeds."""
    speeds = tuple((1.0, 0.8, 1.25)[i % 3] for i in range(n_servers))
    defaults: dict[str, Any] = dict(
        mode="warm",
        n_models=3,
        models_per_server=2,
        server_speeds=speeds,
        patch_choices=tuple(k for k in (1, 2, 4, 8) if k <= n_servers),
    )
    defaults.update(overrides)
    return SimConfig(n_servers=n_servers, arrival_rate=arrival_rate, **defaults)
