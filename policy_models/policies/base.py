"""The one policy interface: heuristics, metaheuristics and learned policies all act through it.

A policy maps a batched observation to a batch of actions [execute, steps, score_1..score_Q] in [-1, 1].
The simulator (and the live aggregator) decode actions with the shared rules in `selector`: start the
best-scoring feasible visible task when execute > 0, with steps mapped linearly onto the step range.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import G_IDX, T_IDX, TIME_SCALE_S, Observation


class Policy(ABC):
    """Acts on batched observations. Stateful policies keep per-environment memory between calls."""

    name: str = "policy"

    def __init__(self, config: SimConfig) -> None:
        self.cfg = config

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Offline work before a run on this policy's config (metaheuristics optimise here)."""

    def begin(self, n_envs: int, seed: int) -> None:  # noqa: B027 - optional hook
        """A new run over `n_envs` environments starts; reset per-environment memory and generators."""

    @abstractmethod
    def act(self, obs: Observation) -> np.ndarray:
        """(B, action_dim) actions in [-1, 1] for a batch of observations."""

    def episodes_ended(self, envs: np.ndarray) -> None:  # noqa: B027 - optional hook
        """These environments finished an episode (the simulator has already reset them)."""

    # ----- helpers shared by hand-written policies ---------------------------------------------------
    def steps_to_action(self, steps: np.ndarray) -> np.ndarray:
        """Inverse of the shared step decoding: the action value that decodes to `steps` exactly."""
        lo, hi = self.cfg.min_steps, self.cfg.max_steps
        if hi == lo:
            return np.zeros_like(steps, dtype=np.float64)
        return (np.asarray(steps, dtype=np.float64) - lo) / (hi - lo) * 2.0 - 1.0

    def compose(self, execute: np.ndarray, steps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Build actions from a boolean execute flag, integer steps and per-slot scores in [-1, 1]."""
        b = len(execute)
        action = np.empty((b, self.cfg.action_dim))
        action[:, 0] = np.where(execute, 1.0, -1.0)
        action[:, 1] = self.steps_to_action(steps)
        action[:, 2:] = np.clip(scores, -1.0, 1.0)
        return action


class TaskFeatures:
    """Per-slot task facts read back from an observation in natural units (seconds, servers)."""

    def __init__(self, obs: Observation, cfg: SimConfig) -> None:
        tasks = obs["tasks"].astype(np.float64)
        max_patches = cfg.max_patches
        self.valid = tasks[..., T_IDX["valid"]] > 0.5
        self.feasible = tasks[..., T_IDX["feasible"]] > 0.5
        self.reusable = tasks[..., T_IDX["reusable"]] > 0.5
        self.waiting_s = tasks[..., T_IDX["waiting"]] * TIME_SCALE_S
        self.patches = np.rint(tasks[..., T_IDX["patches"]] * max_patches).astype(np.int64)
        self.init_now_s = tasks[..., T_IDX["init_now"]] * TIME_SCALE_S
        self.now_s = obs["globals"][:, G_IDX["time"]].astype(np.float64) * cfg.time_limit_s
        self.n_waiting = np.rint(obs["globals"][:, G_IDX["queue_len"]] * cfg.visible_queue).astype(np.int64)


def slot_order_scores(order_key: np.ndarray) -> np.ndarray:
    """Scores in [-1, 1] that rank slots by ascending `order_key` (the smallest key scores highest)."""
    q = order_key.shape[1]
    ranks = np.argsort(np.argsort(order_key, axis=1, kind="stable"), axis=1, kind="stable")
    return 1.0 - 2.0 * ranks / max(q - 1, 1)
