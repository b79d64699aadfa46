"""Per-episode statistics, the same record for the single and the batched simulator."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

STAT_FIELDS = (
    "arrived",  # tasks that arrived before the episode ended
    "launched",  # tasks started (each counted once)
    "reloads",  # launches that loaded a model
    "below_threshold",  # launches whose quality is under the quality threshold
    "decisions",  # decision epochs in the episode
    "sum_response_s",  # sum over launched tasks of wait + init + run
    "sum_wait_s",
    "sum_init_s",
    "sum_run_s",
    "sum_quality",
    "sum_steps",
    "total_reward",
    "sum_lower_bound_s",  # sum over arrived tasks of their fastest run meeting the quality threshold
    "end_time_s",
)


@dataclass(frozen=True)
class EpisodeStats:
    arrived: int
    launched: int
    reloads: int
    below_threshold: int
    decisions: int
    sum_response_s: float
    sum_wait_s: float
    sum_init_s: float
    sum_run_s: float
    sum_quality: float
    sum_steps: float
    total_reward: float
    sum_lower_bound_s: float
    end_time_s: float

    @property
    def unserved(self) -> int:
        """Arrived tasks not started when the episode ended."""
        return self.arrived - self.launched

    def _per_launch(self, total: float) -> float:
        return total / self.launched if self.launched else float("nan")

    @property
    def mean_response_s(self) -> float:
        return self._per_launch(self.sum_response_s)

    @property
    def mean_quality(self) -> float:
        return self._per_launch(self.sum_quality)

    @property
    def reload_rate(self) -> float:
        return self._per_launch(self.reloads)

    @property
    def utility(self) -> float:
        """Reward per arrived task: unserved tasks count with reward 0, so leaving work undone shows."""
        return self.total_reward / self.arrived if self.arrived else float("nan")

    @property
    def lower_bound_s(self) -> float:
        return self.sum_lower_bound_s / self.arrived if self.arrived else float("nan")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: np.ndarray) -> EpisodeStats:
        """From one row of the batched simulator's stats array (columns in STAT_FIELDS order)."""
        values = dict(zip(STAT_FIELDS, row.tolist(), strict=True))
        for name in ("arrived", "launched", "reloads", "below_threshold", "decisions"):
            values[name] = round(values[name])
        return cls(**values)
