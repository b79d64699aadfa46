"""Per-episode statistics, the same record for the single and the batched simulator."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from policy_models.slo import GOODPUT_SCALE, SLO_SCALES

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
    # SLO attainment (policy_models.slo): launched tasks whose response met scale x their standalone time,
    # one count per scale in SLO_SCALES; and when the last launched task finished (for goodput).
    "slo_met_100",
    "slo_met_125",
    "slo_met_150",
    "slo_met_200",
    "makespan_s",
    # Per SLO class (SimConfig.slo_classes; 0 = interactive, 1 = batch): tasks that arrived, and launched
    # tasks that met their own deadline (all in class 0, none met, without SLO classes).
    "class0_arrived",
    "class0_met",
    "class1_arrived",
    "class1_met",
)
# The columns a trajectory fingerprint hashes (tests/policy_models/sim/test_trajectory_fingerprint.py):
# the statistics as they stood when the reference digests were made.
FINGERPRINT_FIELDS = STAT_FIELDS[: STAT_FIELDS.index("end_time_s") + 1]
SLO_FIELDS = ("slo_met_100", "slo_met_125", "slo_met_150", "slo_met_200")
CLASS_FIELDS = ("class0_arrived", "class0_met", "class1_arrived", "class1_met")
assert tuple(f"slo_met_{round(scale * 100)}" for scale in SLO_SCALES) == SLO_FIELDS


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
    slo_met_100: int
    slo_met_125: int
    slo_met_150: int
    slo_met_200: int
    makespan_s: float
    class0_arrived: int
    class0_met: int
    class1_arrived: int
    class1_met: int

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

    @property
    def slo_met(self) -> tuple[int, ...]:
        """Tasks that met their SLO at each scale of `SLO_SCALES`."""
        return tuple(getattr(self, name) for name in SLO_FIELDS)

    def slo_attainment(self, scale: float) -> float:
        """Share of arrived tasks that finished within `scale` x their standalone time (a task never
        started misses it)."""
        met = self.slo_met[SLO_SCALES.index(scale)]
        return met / self.arrived if self.arrived else float("nan")

    def class_attainment(self, slo_class: int) -> float:
        """Share of the arrived tasks of an SLO class that met their own deadline (nan: none arrived)."""
        arrived = (self.class0_arrived, self.class1_arrived)[slo_class]
        met = (self.class0_met, self.class1_met)[slo_class]
        return met / arrived if arrived else float("nan")

    @property
    def goodput_per_min(self) -> float:
        """Tasks that met their SLO at GOODPUT_SCALE, per minute from t=0 to the last finish."""
        met = self.slo_met[SLO_SCALES.index(GOODPUT_SCALE)]
        return 60.0 * met / self.makespan_s if self.makespan_s > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: np.ndarray) -> EpisodeStats:
        """From one row of the batched simulator's stats array (columns in STAT_FIELDS order)."""
        values = dict(zip(STAT_FIELDS, row.tolist(), strict=True))
        integers = (
            "arrived",
            "launched",
            "reloads",
            "below_threshold",
            "decisions",
            *SLO_FIELDS,
            *CLASS_FIELDS,
        )
        for name in integers:
            values[name] = round(values[name])
        return cls(**values)
