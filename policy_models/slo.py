"""Service-level objectives: a task's standalone time and whether its response met a deadline.

The diffusion-serving systems of 2025-26 (TetriServe and its kin, ../shared/notes/related-systems.md)
measure SLO attainment: the share of requests that finish within `scale` × the request's standalone
time, at scales 1.0 to 1.5. We report it beside the EAT paper's utility.

A task's **standalone time** is how long it takes alone on a cluster whose servers already hold its
model: the set-up a gang of holders needs (warm mode: `group_setup_s`; paper mode: 0, an intact group
re-forms for free), then the run on its k servers at nominal speed 1.0 with the **reference step
count**, the fewest steps whose quality reaches the reward's quality threshold (21 steps on the
paper's curve). So a model reload (24-32 s in the paper's profiles) or a wait longer than the slack
misses a tight SLO: both are what a scheduler chooses, and both are what SLO attainment measures.
Fewer steps than the reference buy back time at a cost in quality.

With `SimConfig.slo_classes`, each task also has a deadline of its own: its class's scale x its
standalone time (`class_limits`), a reward bonus for meeting it (`class_bonus`), and attainment is
reported per class (`EpisodeStats.class_attainment`).

Attainment counts every arrived task: one never started misses its SLO. The simulators keep one count
per scale in `SLO_SCALES` (`EpisodeStats.slo_met`), so the single and the batched simulator agree on it
exactly, and `goodput` is the SLO-met tasks at `GOODPUT_SCALE` per minute of the episode's makespan.
"""

from __future__ import annotations

import numpy as np

from policy_models.config import SimConfig
from policy_models.profiles import profile_min_steps

# The scales at which attainment is counted (TetriServe reports 1.0-1.5), and the one goodput uses.
SLO_SCALES: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0)
GOODPUT_SCALE = 1.5


def reference_steps(cfg: SimConfig) -> int:
    """The step count a task's standalone time assumes: the fewest steps meeting the quality threshold."""
    return profile_min_steps(cfg.profile_name, cfg.reward.quality_threshold, cfg.max_steps)


def standalone_table(cfg: SimConfig) -> np.ndarray:
    """Standalone seconds indexed by gang size 0..max_patches (NaN where the profile has no timing)."""
    profile = cfg.profile
    setup = profile.group_setup_s if cfg.mode == "warm" else 0.0
    table = np.full(cfg.max_patches + 1, np.nan)
    steps = reference_steps(cfg)
    for k in profile.patch_sizes:
        if k <= cfg.max_patches:
            table[k] = setup + profile.step_s[k] * steps
    return table


def class_limits(cfg: SimConfig) -> np.ndarray:
    """(2, max_patches + 1): the response-time limit of a task of each SLO class and gang size
    (cfg.slo_classes' scale x the standalone time). Without SLO classes no task has a deadline, so
    none counts as met: -inf."""
    if cfg.slo_classes is None:
        return np.full((2, cfg.max_patches + 1), -np.inf)
    return np.multiply.outer(np.asarray(cfg.slo_classes.scales), standalone_table(cfg))


def class_bonus(cfg: SimConfig) -> np.ndarray:
    """(2,) reward a launch earns when it will meet its class's deadline (0 without SLO classes)."""
    if cfg.slo_classes is None:
        return np.zeros(2)
    return np.asarray(cfg.slo_classes.bonus, dtype=np.float64)


def slo_deadlines(standalone_s: float | np.ndarray) -> np.ndarray:
    """The response-time limit at each of `SLO_SCALES` (a leading axis of len(SLO_SCALES))."""
    return np.multiply.outer(np.asarray(SLO_SCALES), standalone_s)


def scale_label(scale: float) -> str:
    """'1.0x', '1.25x', ... for tables and JSON keys."""
    return f"{scale:g}x" if scale != int(scale) else f"{scale:.1f}x"
