"""Hinted agents: a heuristic's proposal on the same state, as part of what the network reads.

A learned scheduler that starts from a teacher (`learning.imitation`) must first rediscover, inside its
network, what the teacher computes in a few lines: which tasks can start without a reload, what a
launch is worth at each step count, when waiting for a loaded group pays. At N >= 8 our networks did
not get there (docs/learning.md: the N=8 actor made the teacher's launch-or-wait call in 71% of states),
so SAC fine-tuned from a policy already below the teacher.

A hinted agent (`AgentConfig.hint = "reuse"`) is given the heuristic's action as an input instead, as
residual policy learning gives the base controller's action to the learner (Silver et al., 2018;
Johannink et al., 2019): every observation carries an extra entry, `hint` = the heuristic's action
[execute, steps, score_1..score_Q] on that observation. The attention encoder adds each slot's hint
score to its task token and [execute, steps] to the globals token; the flat encoder flattens it in with
the rest. Copying the hint is then one linear map away, and learning can spend its time on where to
depart from it. Nothing else changes: the action space, the reward, the simulator and the critic's
input are the same, the hint is a pure function of the observation (so a decision still depends only on
its own observation), and the live services compute it from the same observation on the same code path.

A residual agent (`AgentConfig.residual`, on top of a hint) goes one step further: its actor's output
is a correction to the hint rather than the action itself, action = clip(hint + 2 * output, -1, 1)
(`to_env_action`; the factor 2 lets an output in [-1, 1] move any entry across the whole range, e.g.
turn a launch into a wait). An output of 0 everywhere is then exactly the heuristic, a constant the
actor learns far more precisely than the heuristic's step count itself (a step is 0.05 of the action
range). The replay buffer keeps the actor's output; the critic turns it into the action before it
reads it (`TwinCritic(residual=True)`), so it judges decisions in the simulator's terms: which task the
scores pick, whether execute launches. Read raw, scores near 0 would pick no task clearly.

The hint heuristic must be memoryless, as teachers must: replay batches mix states of many episodes.
"""

from __future__ import annotations

import numpy as np

from policy_models.config import SimConfig
from policy_models.learning.imitation import TEACHERS
from policy_models.nets.encoders import HINT_KEY, RESIDUAL_SCALE, residual_to_action
from policy_models.obs import Observation, ObservationSpec
from policy_models.policies import Policy, make_policy

HINTS: tuple[str, ...] = TEACHERS


def make_hinter(name: str, config: SimConfig) -> Policy:
    """The heuristic whose actions hint a hinted agent (refuses unknown or stateful ones)."""
    if name not in HINTS:
        raise ValueError(f"hint must be one of {HINTS} (memoryless heuristics), not {name!r}")
    return make_policy(name, config)


def with_hint(obs: Observation, hinter: Policy | None) -> Observation:
    """The observation with the hinter's action on it added (float32, clipped to [-1, 1]); unchanged
    when there is no hinter."""
    if hinter is None:
        return obs
    hint = np.clip(hinter.act(obs), -1.0, 1.0).astype(np.float32)
    return {**obs, HINT_KEY: hint}


def observation_shapes(spec: ObservationSpec, hinted: bool) -> dict[str, tuple[int, ...]]:
    """Per-row shapes of an agent's observations for this cluster (`ObservationSpec.shapes`, plus
    the hint's (2 + Q,) for a hinted agent)."""
    shapes = dict(spec.shapes)
    if hinted:
        shapes[HINT_KEY] = (2 + spec.visible_queue,)
    return shapes


def to_env_action(output: np.ndarray, obs: Observation, residual: bool, deadzone: float = 0.0) -> np.ndarray:
    """The action the simulator takes for an actor's output: the output itself, or for a residual
    agent clip(hint + RESIDUAL_SCALE * output, -1, 1), the output first shrunk by its dead zone
    (`nets.encoders.residual_to_action`)."""
    if not residual:
        return output
    if deadzone > 0.0:
        output = np.sign(output) * np.maximum(np.abs(output) - deadzone, 0.0)
    return np.clip(obs[HINT_KEY] + RESIDUAL_SCALE * output, -1.0, 1.0).astype(np.float32)


def from_env_action(
    action: np.ndarray, obs: Observation, residual: bool, deadzone: float = 0.0
) -> np.ndarray:
    """The actor output that gives `action` (inverse of `to_env_action` for actions in [-1, 1]): no
    correction where the action is the hint's, else one just past the dead zone."""
    if not residual:
        return action
    correction = (action - obs[HINT_KEY]) / RESIDUAL_SCALE
    if deadzone > 0.0:
        correction = np.sign(correction) * (np.abs(correction) + deadzone) * (correction != 0)
    return np.clip(correction, -1.0, 1.0).astype(np.float32)


__all__ = [
    "HINTS",
    "RESIDUAL_SCALE",
    "from_env_action",
    "make_hinter",
    "observation_shapes",
    "residual_to_action",
    "to_env_action",
    "with_hint",
]
