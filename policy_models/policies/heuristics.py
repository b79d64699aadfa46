"""Hand-written schedulers behind the common policy interface."""

from __future__ import annotations

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import Observation
from policy_models.policies.base import Policy, TaskFeatures, slot_order_scores


class RandomPolicy(Policy):
    """Uniform random actions, decoded by the shared task and server selectors (paper baseline)."""

    name = "random"

    def __init__(self, config: SimConfig, seed: int = 0) -> None:
        super().__init__(config)
        self._rng = np.random.default_rng(seed)

    def begin(self, n_envs: int, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        b = obs["tasks"].shape[0]
        return self._rng.uniform(-1.0, 1.0, size=(b, self.cfg.action_dim))


class FifoPolicy(Policy):
    """Start the oldest feasible task as soon as possible, always at the maximum steps."""

    name = "fifo"

    def act(self, obs: Observation) -> np.ndarray:
        tasks = TaskFeatures(obs, self.cfg)
        # Queue slots are in arrival order, so slot order is FIFO order.
        scores = slot_order_scores(np.broadcast_to(np.arange(tasks.valid.shape[1]), tasks.valid.shape))
        steps = np.full(len(scores), self.cfg.max_steps)
        return self.compose(tasks.feasible.any(1), steps, scores)
