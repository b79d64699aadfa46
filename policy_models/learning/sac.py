"""One soft actor-critic update (paper V-C, after SAC and D2SAC), written to be read top to bottom.

critic:  y = r + gamma * (1 - done) * (min(Q1', Q2')(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s')
         L_Q = MSE(Q1(s, a), y) + MSE(Q2(s, a), y)                                  (eqs. 19-21)
actor:   L_pi = E[alpha * log pi(a~|s) - min(Q1, Q2)(s, a~)],  a~ ~ pi(.|s) reparameterised  (eq. 15)
targets: theta' <- (1 - tau) theta' + tau theta                                       (eq. 22)

The temperature alpha is fixed (Table VIII) unless config.learn_alpha (SAC v2's automatic tuning:
L(log_alpha) = -log_alpha * (log pi + target entropy), see `target_entropy`). The encoder is shared
and trained by the critic loss only (see `agents` for why). As in DrQ-v2, s and s' are encoded once
each per update: the actor reuses the critic's features of s, detached, and the target critics read
the online encoder's features of s' (no target encoder). On one CPU thread an encoder forward is
about a tenth of an update, so each one saved counts; the features' one-step staleness is far below
the actor's noise.

lad-ts: the actor's reverse chain starts from the priors stored with each transition (LAD-TS's
(s, a, prior, r, s', prior')): prior for the fresh actions at s, prior' for a' at s'. They are the
priors the acting policy started from, not the prior as it stands now, as LAD-TS replays them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_models.learning.agents import Agent, AgentConfig
from policy_models.learning.buffer import TransitionBatch
from policy_models.learning.imitation import ImitationTerm, actor_imitation_loss, q_filtered
from policy_models.nets import EncodedState, as_tensors, soft_update


@dataclass(frozen=True)
class UpdateStats:
    """What one update measured (means over the batch)."""

    critic_loss: float
    actor_loss: float
    q_mean: float  # mean of min(Q1, Q2) at the actor's fresh actions
    target_q_mean: float  # mean TD target y
    log_prob_mean: float  # mean log pi(a~|s) of the fresh actions
    entropy_estimate: float  # -log_prob_mean: a one-sample Monte-Carlo estimate of the policy entropy
    critic_grad_norm: float  # before clipping
    actor_grad_norm: float
    alpha: float = 0.0  # the entropy temperature used (learned or fixed)
    imitation_loss: float = math.nan  # learning from a teacher: mean per-sample imitation loss
    imitation_kept: float = math.nan  # share of samples the Q-filter kept (1 in pretraining)

    def metrics(self) -> dict[str, float]:
        """Named for the logs: losses under loss/, the rest under train/."""
        values = asdict(self)
        metrics = {
            "loss/critic": values.pop("critic_loss"),
            "loss/actor": values.pop("actor_loss"),
            "loss/imitation": values.pop("imitation_loss"),
            **{f"train/{name}": value for name, value in values.items()},
        }
        return {name: value for name, value in metrics.items() if not math.isnan(value)}


@dataclass
class Optimizers:
    """The critic's optimiser also owns the shared encoder (it is trained by the critic loss)."""

    actor: torch.optim.Optimizer
    critic: torch.optim.Optimizer
    alpha: torch.optim.Optimizer | None = None  # learn_alpha only

    def named(self) -> dict[str, torch.optim.Optimizer]:
        named = {"actor": self.actor, "critic": self.critic}
        if self.alpha is not None:
            named["alpha"] = self.alpha
        return named


def build_optimizers(agent: Agent) -> Optimizers:
    """AdamW: Adam (the paper's optimiser) with decoupled weight decay (Table VIII)."""
    config = agent.config
    critic_params = [*agent.encoder.parameters(), *agent.critic.parameters()]
    return Optimizers(
        actor=torch.optim.AdamW(
            agent.actor.parameters(), lr=config.actor_lr, weight_decay=config.weight_decay
        ),
        critic=torch.optim.AdamW(critic_params, lr=config.critic_lr, weight_decay=config.weight_decay),
        alpha=None
        if agent.temperature is None
        else torch.optim.Adam(agent.temperature.parameters(), lr=config.alpha_lr),
    )


@dataclass(frozen=True)
class TensorBatch:
    """A replay batch as float32 tensors."""

    obs: dict[str, Tensor]
    action: Tensor
    reward: Tensor
    next_obs: dict[str, Tensor]
    done: Tensor
    prior: Tensor | None = None  # lad-ts: the reverse chain's start at obs
    next_prior: Tensor | None = None  # and at next_obs

    @classmethod
    def from_numpy(cls, batch: TransitionBatch) -> TensorBatch:
        return cls(
            obs=as_tensors(batch.obs),
            action=torch.as_tensor(batch.action, dtype=torch.float32),
            reward=torch.as_tensor(batch.reward, dtype=torch.float32),
            next_obs=as_tensors(batch.next_obs),
            done=torch.as_tensor(batch.done, dtype=torch.float32),
            prior=_optional_tensor(batch.prior),
            next_prior=_optional_tensor(batch.next_prior),
        )


def _optional_tensor(values: np.ndarray | None) -> Tensor | None:
    return None if values is None else torch.as_tensor(values, dtype=torch.float32)


def chain_starts(agent: Agent, batch: TensorBatch) -> tuple[Tensor | None, Tensor | None]:
    """(prior, next_prior) for the actor's chain: the stored ones for lad-ts, (None, None) otherwise
    (noise). A lad-ts batch without priors is refused rather than silently trained from noise."""
    if not agent.config.uses_prior:
        return None, None
    if batch.prior is None or batch.next_prior is None:
        raise ValueError("lad-ts updates need the priors stored with the transitions (with_priors buffer)")
    return batch.prior, batch.next_prior


def sac_update(
    agent: Agent,
    optimizers: Optimizers,
    batch: TensorBatch,
    generator: torch.Generator | None = None,
    teacher_action: Tensor | None = None,
) -> UpdateStats:
    """One critic step, one actor step, one soft target update. Random draws come from `generator`.

    With `teacher_action` (B, A) and config.bc_weight > 0 the actor loss also carries the Q-filtered
    imitation term of `imitation` (learning from a teacher heuristic)."""
    config = agent.config
    agent.train()
    state, critic_loss, target_q, critic_grad_norm = critic_step(agent, optimizers, batch, generator)

    # ----- actor: maximise min Q of fresh actions plus entropy --------------------------------------
    prior, _ = chain_starts(agent, batch)
    action, log_prob, mu = agent.actor(state, prior=prior, generator=generator)
    with frozen(agent.critic):  # gradients flow through Q to the action, not into the critic
        q1_pi, q2_pi = agent.critic(state, action)
    min_q_pi = torch.min(q1_pi, q2_pi)
    alpha = agent.alpha
    actor_loss = (alpha * log_prob - min_q_pi).mean()
    imitation = None
    if teacher_action is not None and config.bc_weight > 0:
        imitation = filtered_imitation(agent, state, mu, teacher_action, generator)
        # Relative to the batch's |Q| (TD3+BC), so bc_weight does not depend on the reward scale.
        actor_loss = actor_loss + config.bc_weight * min_q_pi.detach().abs().mean() * imitation.loss
    actor_grad_norm = _step(optimizers.actor, actor_loss, agent.actor.parameters(), config)

    # ----- temperature (learn_alpha): match the entropy to its target -------------------------------
    if agent.temperature is not None and optimizers.alpha is not None:
        target = target_entropy(config, state, action)
        alpha_loss = -(agent.temperature.log_alpha * (log_prob.detach() + target)).mean()
        optimizers.alpha.zero_grad(set_to_none=True)
        alpha_loss.backward()
        optimizers.alpha.step()

    # ----- target critics follow the online ones slowly ----------------------------------------------
    soft_update(agent.target_critic, agent.critic, config.tau)

    log_prob_mean = log_prob.detach().mean().item()
    return UpdateStats(
        critic_loss=critic_loss,
        actor_loss=actor_loss.item(),
        q_mean=min_q_pi.detach().mean().item(),
        target_q_mean=target_q.mean().item(),
        log_prob_mean=log_prob_mean,
        entropy_estimate=-log_prob_mean,
        critic_grad_norm=critic_grad_norm,
        actor_grad_norm=actor_grad_norm,
        alpha=alpha,
        imitation_loss=math.nan if imitation is None else imitation.raw_loss,
        imitation_kept=math.nan if imitation is None else imitation.kept_share,
    )


def imitation_update(
    agent: Agent,
    optimizers: Optimizers,
    batch: TensorBatch,
    teacher_action: Tensor,
    generator: torch.Generator | None = None,
) -> UpdateStats:
    """Pretraining on a teacher's data: the same critic step as `sac_update` (the critic learns the
    values of the policy being imitated), and an actor step on the imitation loss alone (the critic is
    not yet worth following). Temperature and targets move as in `sac_update`."""
    config = agent.config
    agent.train()
    state, critic_loss, target_q, critic_grad_norm = critic_step(agent, optimizers, batch, generator)
    prior, _ = chain_starts(agent, batch)
    _, log_prob, mu = agent.actor(state, prior=prior, generator=generator)
    per_sample = actor_imitation_loss(
        agent.actor, state, mu, teacher_action, config.bc_score_temperature, generator
    )
    actor_loss = per_sample.mean()
    actor_grad_norm = _step(optimizers.actor, actor_loss, agent.actor.parameters(), config)
    soft_update(agent.target_critic, agent.critic, config.tau)
    log_prob_mean = log_prob.detach().mean().item()
    return UpdateStats(
        critic_loss=critic_loss,
        actor_loss=actor_loss.item(),
        q_mean=math.nan,
        target_q_mean=target_q.mean().item(),
        log_prob_mean=log_prob_mean,
        entropy_estimate=-log_prob_mean,
        critic_grad_norm=critic_grad_norm,
        actor_grad_norm=actor_grad_norm,
        alpha=agent.alpha,
        imitation_loss=actor_loss.item(),
        imitation_kept=1.0,
    )


def critic_step(
    agent: Agent, optimizers: Optimizers, batch: TensorBatch, generator: torch.Generator | None
) -> tuple[EncodedState, float, Tensor, float]:
    """Regress both Q heads onto the soft TD target. Returns (the batch's state features, detached for
    the actor, which does not train the encoder; critic loss; TD targets; gradient norm)."""
    target_q = td_target(agent, batch, generator)
    state = agent.encoder(batch.obs)
    q1, q2 = agent.critic(state, batch.action)
    critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
    params = [*agent.encoder.parameters(), *agent.critic.parameters()]
    grad_norm = _step(optimizers.critic, critic_loss, params, agent.config)
    return detached(state), critic_loss.item(), target_q, grad_norm


def filtered_imitation(
    agent: Agent,
    state: EncodedState,
    mu: Tensor,
    teacher_action: Tensor,
    generator: torch.Generator | None = None,
) -> ImitationTerm:
    """The actor's imitation loss, kept where the critic prefers the teacher's action to its mean
    (everywhere when config.q_filter is off: TD3+BC's unconditional behaviour cloning)."""
    per_sample = actor_imitation_loss(
        agent.actor, state, mu, teacher_action, agent.config.bc_score_temperature, generator
    )
    if not agent.config.q_filter:
        return ImitationTerm(per_sample.mean(), per_sample.detach().mean().item(), 1.0)
    with torch.no_grad():
        q_teacher = torch.min(*agent.critic(state, teacher_action))
        q_actor = torch.min(*agent.critic(state, mu.detach()))
    return q_filtered(per_sample, q_teacher, q_actor)


def target_entropy(config: AgentConfig, state: EncodedState, action: Tensor) -> Tensor:
    """Per-sample entropy target: target_entropy_per_dim times the counted action dimensions (execute,
    steps and the valid task slots, the ones log_prob sums over), shape (B,)."""
    if state.task_valid is None:
        counted = torch.full(action.shape[:1], float(action.shape[1]))
    else:
        counted = 2.0 + state.task_valid.to(action.dtype).sum(-1)
    return config.target_entropy_per_dim * counted


@torch.no_grad()
def td_target(agent: Agent, batch: TensorBatch, generator: torch.Generator | None = None) -> Tensor:
    """y = r + gamma * (1 - done) * (min(Q1', Q2')(s', a') - alpha * log pi(a'|s')), a' ~ pi(.|s').

    With n-step returns (config.n_step = n) the stored r is already sum_k gamma^k r_k and s' is n
    steps ahead, so gamma becomes gamma^n; r is multiplied by config.reward_scale. One encoding of s'
    serves both the online actor (there is no target actor, V-C3) and the target critics."""
    config = agent.config
    next_state = agent.encoder(batch.next_obs)
    _, next_prior = chain_starts(agent, batch)
    next_action, next_log_prob, _ = agent.actor(next_state, prior=next_prior, generator=generator)
    q1_next, q2_next = agent.target_critic(next_state, next_action)
    soft_value = torch.min(q1_next, q2_next) - agent.alpha * next_log_prob
    discount = config.gamma**config.n_step
    return config.reward_scale * batch.reward + discount * (1.0 - batch.done) * soft_value


@torch.no_grad()
def td_error(agent: Agent, batch: TensorBatch, generator: torch.Generator | None = None) -> float:
    """Mean squared TD error of both critics on a batch (a diagnostic; changes nothing)."""
    target_q = td_target(agent, batch, generator)
    q1, q2 = agent.critic(agent.encoder(batch.obs), batch.action)
    return 0.5 * ((q1 - target_q).square().mean() + (q2 - target_q).square().mean()).item()


def detached(state: EncodedState) -> EncodedState:
    return EncodedState(*(None if part is None else part.detach() for part in state))


def _step(
    optimizer: torch.optim.Optimizer, loss: Tensor, params: Iterable[nn.Parameter], config: AgentConfig
) -> float:
    """Backward, optional clipping, optimiser step; returns the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = config.max_grad_norm if config.max_grad_norm is not None else math.inf
    norm = float(nn.utils.clip_grad_norm_(list(params), max_norm))
    optimizer.step()
    return norm


class frozen:  # lowercase: a context manager used like torch.no_grad
    """Within the block the module's parameters take no gradient (restored after)."""

    def __init__(self, module: nn.Module) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for param in self.params:
            param.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for param in self.params:
            param.requires_grad_(True)


__all__ = [
    "Optimizers",
    "TensorBatch",
    "UpdateStats",
    "build_optimizers",
    "chain_starts",
    "detached",
    "frozen",
    "imitation_update",
    "sac_update",
    "td_error",
    "td_target",
]
