"""Reward on launching a task: the one implementation the simulator and the live services share.

Written with operators that work on Python floats and on NumPy arrays alike, so the single environment,
the batched simulator and the aggregator compute rewards with the same arithmetic.
"""

from __future__ import annotations

import numpy as np

from policy_models.config import RewardConfig


def launch_reward(
    wait_s: float | np.ndarray,
    exec_s: float | np.ndarray,
    queue_wait_s: float | np.ndarray,
    quality: float | np.ndarray,
    cfg: RewardConfig,
) -> float | np.ndarray:
    """EAT reward of launching a task now (DESIGN section 2).

    wait_s: how long the task waited; exec_s: init (reload or group setup) + run time it will take;
    queue_wait_s: mean waiting time of the visible queue after the launch (0 when it is empty).
    """
    time_term = np.minimum(cfg.w_t / (cfg.w_tt * queue_wait_s + exec_s + wait_s), cfg.time_cap)
    penalty = cfg.penalty * (quality < cfg.quality_threshold)
    return time_term + cfg.w_q * quality - penalty


def reward_range(cfg: RewardConfig) -> tuple[float, float]:
    """The least and greatest reward `launch_reward` can give (a wait earns 0, inside it).

    The time term lies in [0, time_cap] (non-negative times), quality on the CLIP scale in [-1, 1] adds
    [-w_q, w_q], and the penalty takes away at most `penalty`."""
    return -cfg.w_q - cfg.penalty, cfg.time_cap + cfg.w_q
