"""An SLO-aware rule in TetriServe's spirit: earliest deadline first, steps chosen to just meet it.

Each task's deadline is its arrival plus `scale` x its standalone time (policy_models.slo), or, where
the cluster has SLO classes, its own deadline read from its token (the `slack` feature). Among the
feasible visible tasks, those that can still finish by their deadline with a useful step count (one of
positive quality) go first, earliest deadline first, each at the most steps that still meet it (capped
at the step range): the time the deadline leaves is spent on quality. When no feasible task can meet
its deadline any more, the one that has waited longest starts at the reference step count. It never
waits while something is feasible. TetriServe also picks each request's degree of parallelism; here a
task's gang size is its patch count, fixed by the client, so the steps are the rule's only lever.
"""

from __future__ import annotations

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import T_IDX, TIME_SCALE_S, Observation, ObservationSpec
from policy_models.policies.base import Policy
from policy_models.policies.heuristics import LaunchOutlook, one_hot_scores
from policy_models.profiles import profile_quality_table
from policy_models.slo import GOODPUT_SCALE, reference_steps, standalone_table


class EarliestDeadlinePolicy(Policy):
    name = "edf"

    def __init__(self, config: SimConfig, scale: float = GOODPUT_SCALE) -> None:
        super().__init__(config)
        self.scale = scale
        self._spec = ObservationSpec.from_config(config)
        self._steps = np.arange(config.min_steps, config.max_steps + 1)
        quality = profile_quality_table(config.profile_name, config.max_steps)[self._steps]
        self._useful = quality > 0.0  # step counts that make an image worth anything
        self._standalone = np.nan_to_num(standalone_table(config), nan=np.inf)
        self._reference_steps = reference_steps(config)

    def act(self, obs: Observation) -> np.ndarray:
        out = LaunchOutlook(obs, self.cfg, self._spec)
        tasks = out.tasks
        time_left = self._time_left(obs, out)  # (B,Q) seconds until each task's deadline
        meets = (out.exec_s(self._steps) <= time_left[..., None]) & self._useful  # (B,Q,S)
        on_time = tasks.feasible & meets.any(-1)
        # The most steps that still meet the deadline (meets is monotone: fewer steps finish sooner).
        most_steps = self._steps[np.where(meets, np.arange(len(self._steps)), 0).max(-1)]
        late_order = np.where(tasks.feasible, out.wait_s, -np.inf)
        urgent_order = np.where(on_time, -time_left, -np.inf)
        any_on_time = on_time.any(1)
        slot = np.where(any_on_time, urgent_order.argmax(1), late_order.argmax(1))
        chosen_steps = np.take_along_axis(most_steps, slot[:, None], 1)[:, 0]
        steps = np.where(any_on_time, chosen_steps, self._reference_steps)
        return self.compose(tasks.feasible.any(1), steps, one_hot_scores(slot, tasks.feasible.shape[1]))

    def _time_left(self, obs: Observation, out: LaunchOutlook) -> np.ndarray:
        if self._spec.class_limits is not None:  # each task's own deadline (obs.SLO_TASK_FEATURES)
            return obs["tasks"][..., T_IDX["slack"]].astype(np.float64) * TIME_SCALE_S
        patches = np.clip(out.tasks.patches, 0, len(self._standalone) - 1)
        return self.scale * self._standalone[patches] - out.wait_s
