"""Learning from a teacher: behaviour cloning of a hand-written scheduler, kept only where it pays.

Soft actor-critic from uniform random actions spends most of a CPU half-hour rediscovering what our
reuse-aware heuristic already knows (start reusable tasks first, spend fewer steps when the queue is
long). A teacher shortens that in three ways (`train.TrainSettings.teacher`):

1. warm-up: the teacher's actions (plus Gaussian noise, so the critic sees neighbouring actions) fill
   the replay buffer instead of uniform random ones;
2. pretraining: the actor imitates the teacher on that data while the critic learns its values;
3. fine-tuning: SAC as usual, plus a behaviour-cloning term in the actor loss that is kept only where
   the critic rates the teacher's action above the actor's own mean action: the Q-filter of Nair et
   al. (2018, "Overcoming exploration in RL with demonstrations"). Where the actor has found something
   better, the teacher stops pulling. The term's weight is relative to the mean |Q| of the batch, as in
   TD3+BC (Fujimoto & Gu, 2021), so one `bc_weight` suits any reward scale.

What is imitated: a diffusion actor (EAT, EAT-A, LAD-TS) learns the teacher's actions as a generative
model, with Diffusion-QL's denoising loss (Wang et al., 2023): a loss on the reverse chain's output
would lose its gradient wherever the chain's x0 clamp saturates, as it does at initialisation.
A Gaussian actor (EAT-D, EAT-DA) learns with a loss on its mean action that matches how actions are
decoded (`selector`): execute and steps are regressed
(squared error on the [-1, 1] values), the task choice is a classification: cross-entropy of the
scores over the feasible slots (the only ones the selector can pick), against the slot the teacher
picked. Steps and the task count only where the teacher launches; nothing counts where no task is
feasible (the action is not read there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_models.config import SimConfig
from policy_models.nets import DiffusionActor, EncodedState
from policy_models.policies import Policy, make_policy

# Teachers must act on any single observation without memory (a replay batch mixes episodes).
TEACHERS: tuple[str, ...] = ("reuse", "greedy", "fifo")


def make_teacher(name: str, config: SimConfig) -> Policy:
    if name not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS} (memoryless heuristics), not {name!r}")
    return make_policy(name, config)


def teacher_actions(teacher: Policy, obs: dict[str, np.ndarray]) -> Tensor:
    """The teacher's actions for a batch of observations, as a float32 tensor in [-1, 1]."""
    return torch.as_tensor(np.clip(teacher.act(obs), -1.0, 1.0), dtype=torch.float32)


def noisy(action: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Teacher actions with Gaussian noise, clipped to [-1, 1] (warm-up exploration)."""
    if noise_std <= 0:
        return action.astype(np.float32)
    return np.clip(action + rng.normal(0.0, noise_std, action.shape), -1.0, 1.0).astype(np.float32)


def actor_imitation_loss(
    actor: nn.Module,
    state: EncodedState,
    mu: Tensor,
    teacher: Tensor,
    score_temperature: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B,) the imitation loss an actor learns from: a diffusion actor's denoising loss on the teacher's
    actions (Diffusion-QL's behaviour cloning); for a Gaussian actor, `imitation_loss` on its mean."""
    if isinstance(actor, DiffusionActor):
        return actor.denoising_loss(state, teacher, generator)
    return imitation_loss(mu, teacher, state.task_feasible, score_temperature)


def imitation_loss(mu: Tensor, teacher: Tensor, feasible: Tensor, score_temperature: float) -> Tensor:
    """(B,) per-sample imitation loss of mean actions `mu` (B, 2+Q) against teacher actions.

    feasible (B, Q): the slots the selector may pick. Logits are scores / score_temperature over the
    feasible slots; the target slot is the teacher's best-scoring feasible one."""
    any_feasible = feasible.any(1)
    launches = any_feasible & (teacher[:, 0] > 0)
    execute = (mu[:, 0] - teacher[:, 0]).square() * any_feasible
    steps = (mu[:, 1] - teacher[:, 1]).square() * launches
    logits = (mu[:, 2:] / score_temperature).masked_fill(~feasible, float("-inf"))
    # Rows without a feasible slot get all-zero logits (finite loss, zeroed by `launches` below).
    logits = torch.where(any_feasible[:, None], logits, torch.zeros_like(logits))
    target = teacher[:, 2:].masked_fill(~feasible, float("-inf")).argmax(1)
    choice = F.cross_entropy(logits, target, reduction="none") * launches
    return execute + steps + choice


@dataclass(frozen=True)
class ImitationTerm:
    """The filtered imitation term of one actor update, and what it measured."""

    loss: Tensor  # scalar: mean over the batch of filter * per-sample loss
    raw_loss: float  # mean per-sample loss before the filter
    kept_share: float  # share of samples where the teacher's action was rated better


def q_filtered(per_sample: Tensor, q_teacher: Tensor, q_actor: Tensor) -> ImitationTerm:
    """Keep the imitation loss where min Q(s, teacher) > min Q(s, actor's mean action)."""
    keep = (q_teacher > q_actor).to(per_sample.dtype)
    return ImitationTerm(
        loss=(per_sample * keep).mean(),
        raw_loss=per_sample.detach().mean().item(),
        kept_share=keep.mean().item(),
    )


__all__ = [
    "TEACHERS",
    "ImitationTerm",
    "actor_imitation_loss",
    "imitation_loss",
    "make_teacher",
    "noisy",
    "q_filtered",
    "teacher_actions",
]
