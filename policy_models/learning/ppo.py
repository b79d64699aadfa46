"""PPO, the paper's on-policy baseline (Section VI, Table VIII), after CleanRL: read it top to bottom.

agent:    AttentionEncoder -> GaussianActor (per-task layout: one network for any N and Q), and a value
          head on the pooled feature. One encoder, trained by the joint loss (see `build_ppo_agent`).
rollout:  `rollout_steps` batched steps of the n_envs environments with the stochastic policy; the
          actions are stored unclipped (the simulator clips), since their log-probs are what the
          ratio compares.
GAE:      delta_t = r_t + gamma (1 - done_t) V(s_{t+1}) - V(s_t)
          A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},       R_t = A_t + V(s_t)
update:   `epochs` passes over the rollout in `minibatches` shuffled minibatches, each a step on
          L = -min(rho A, clip(rho, 1 - eps, 1 + eps) A) + c_v 0.5 (V - R)^2 - c_e H,  rho = pi / pi_old
training: `train_ppo(settings)` writes what `train.train` writes (read its docstring): tensorboard/,
          metrics.csv, checkpoints/step_*/ (weights + optimiser and generators; no replay buffer) and
          best/. Like SAC's, a resumed run restarts the environments on fresh workloads.

A checkpoint names its modules "encoder", "actor" (the classes `LearnedPolicy.from_checkpoint` rebuilds)
and "value", so `make_policy("checkpoint:<dir>", cfg)` serves a PPO run as it serves a SAC one: the
deterministic mean action.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn
from tqdm import tqdm

from policy_models.checkpoints import CheckpointError, load_checkpoint, restore_modules, save_checkpoint
from policy_models.config import SimConfig
from policy_models.learning.agents import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    STEP_PREFIX,
    resolve_checkpoint,
    step_checkpoints,
)
from policy_models.learning.train import (
    CSV_FILE,
    TENSORBOARD_DIR,
    TRAINER_STATE,
    VALIDATION_SEEDS,
    Generators,
    MetricsLogger,
    Progress,
    Throughput,
    TrainResult,
    code_version,
    crossed,
    evaluate_agent,
    flatten_optimizer_state,
    train_env_seeds,
    unflatten_optimizer_state,
)
from policy_models.nets import AttentionEncoder, GaussianActor, as_tensors
from policy_models.nets.diffusion import HALF_LOG_2PI, counted_dimensions, mlp
from policy_models.nets.encoders import TensorObservation
from policy_models.obs import (
    GLOBAL_FEATURES,
    OBS_SPEC_VERSION,
    SERVER_FEATURES,
    TASK_FEATURES,
    Observation,
)
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.stats import EpisodeStats

ALGORITHM = "ppo"
CHECKPOINT_KIND = "eat-serve/ppo-agent"
OPTIMIZER_NAME = "ppo"  # the optimiser's key in trainer_state.json
# |log pi - log pi_old| is clamped here before exp(): float32 overflows past ~88, and a sample that far
# outside [1 - eps, 1 + eps] contributes no gradient through the clipped term anyway.
MAX_LOG_RATIO = 20.0


@dataclass(frozen=True)
class PPOConfig:
    """Networks and PPO hyperparameters: Table VIII where it gives a value, else marked our choice."""

    # Networks: as eat-d's (`AgentConfig`), with the paper's 256-unit Mish layers.
    hidden: int = 256
    score_hidden: int = 64
    value_hidden: int = 256
    d_model: int = 64
    attention_heads: int = 4
    attention_layers: int = 2
    attention_ff: int = 128
    log_std_min: float = -5.0
    log_std_max: float = 1.0
    # PPO (Table VIII).
    gamma: float = 0.95
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5
    # Our choice (the paper gives none): CleanRL's / Tianshou's MuJoCo defaults; 64 envs x 128 steps
    # make 8192 transitions per rollout, 32 minibatches of 256.
    rollout_steps: int = 128  # batched steps per rollout
    epochs: int = 10
    minibatches: int = 32
    learning_rate: float = 3e-4  # constant (no annealing: a resumed run needs no schedule state)
    adam_eps: float = 1e-5
    normalize_advantages: bool = True  # per minibatch
    # Our choice: rewards are multiplied by this before GAE (logged episode rewards stay unscaled).
    # Launch rewards of several units make discounted returns of tens; at that size the value loss
    # dominates the shared encoder's gradient, and the 0.5 norm clip then shrinks the policy's share.
    reward_scale: float = 0.1

    def __post_init__(self) -> None:
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError("gamma and gae_lambda must lie in [0, 1]")
        if self.rollout_steps < 1 or self.epochs < 1 or self.minibatches < 1:
            raise ValueError("need rollout_steps, epochs and minibatches >= 1")
        if min(self.clip_coef, self.learning_rate, self.max_grad_norm, self.reward_scale) <= 0:
            raise ValueError("need clip_coef, learning_rate, max_grad_norm and reward_scale > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PPOConfig:
        return cls(**data)


# ----- the agent ---------------------------------------------------------------------------------------
class ValueHead(nn.Module):
    """V(s) from the pooled state feature: a Mish MLP with one output."""

    def __init__(self, state_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.state_dim, self.hidden = state_dim, hidden
        self.net = mlp(state_dim, hidden, 1)

    def config(self) -> dict[str, Any]:
        return dict(state_dim=self.state_dim, hidden=self.hidden)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled).squeeze(-1)


@dataclass
class PPOAgent:
    """`encoder` + `actor` are the policy (what `LearnedPolicy` serves); `value` is the baseline."""

    config: PPOConfig
    encoder: AttentionEncoder
    actor: GaussianActor
    value: ValueHead

    def modules(self) -> dict[str, nn.Module]:
        """Every module by its checkpoint name."""
        return {"encoder": self.encoder, "actor": self.actor, "value": self.value}

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules().values() for p in module.parameters()]

    def train(self, mode: bool = True) -> None:
        for module in self.modules().values():
            module.train(mode)


def build_ppo_agent(config: PPOConfig, seed: int = 0) -> PPOAgent:
    """Fresh modules, initialised from `seed` without touching torch's global RNG.

    One encoder serves the actor and the value head and is trained by the joint loss: the value
    coefficient exists to weigh the two losses on shared features, one encoder forward per minibatch
    serves both, and serving keeps one encoder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = AttentionEncoder(
            len(SERVER_FEATURES),
            len(TASK_FEATURES),
            len(GLOBAL_FEATURES),
            d_model=config.d_model,
            heads=config.attention_heads,
            layers=config.attention_layers,
            ff_dim=config.attention_ff,
        )
        actor = GaussianActor(
            encoder.out_dim,
            token_dim=encoder.out_dim,
            hidden=config.hidden,
            score_hidden=config.score_hidden,
            log_std_min=config.log_std_min,
            log_std_max=config.log_std_max,
        )
        value = ValueHead(encoder.out_dim, hidden=config.value_hidden)
    return PPOAgent(config, encoder, actor, value)


def build_optimizer(agent: PPOAgent) -> torch.optim.Optimizer:
    """One Adam over all parameters: the loss is one sum (CleanRL's eps=1e-5)."""
    return torch.optim.Adam(agent.parameters(), lr=agent.config.learning_rate, eps=agent.config.adam_eps)


@torch.inference_mode()
def sample_actions(
    agent: PPOAgent, obs: TensorObservation, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(action, log_prob, value) for a batch: actions sampled, unclipped."""
    state = agent.encoder(obs)
    action, log_prob, _ = agent.actor(state, generator=generator)
    return action, log_prob, agent.value(state.pooled)


@torch.inference_mode()
def state_values(agent: PPOAgent, obs: TensorObservation) -> Tensor:
    return agent.value(agent.encoder(obs).pooled)


def evaluate_actions(
    agent: PPOAgent, obs: TensorObservation, action: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(log pi(action | s), entropy of pi(. | s), V(s)) under the current weights, with gradients.

    The density is the actor's own (`gaussian_sample`): N(mu, std^2) per dimension, summed over
    execute, steps and the valid task slots only."""
    state = agent.encoder(obs)
    _, _, mu = agent.actor(state, deterministic=True)
    log_std = agent.actor.log_std_head(mu)
    counted = counted_dimensions(state.task_valid, mu)
    z = (action - mu) * torch.exp(-log_std)
    log_prob = _sum_counted(-0.5 * z.square() - log_std - HALF_LOG_2PI, counted)
    entropy = _sum_counted(0.5 + HALF_LOG_2PI + log_std, counted)
    return log_prob, entropy, agent.value(state.pooled)


def _sum_counted(per_dimension: Tensor, counted: Tensor | None) -> Tensor:
    return (per_dimension if counted is None else per_dimension * counted).sum(-1)


# ----- rollouts and advantages -------------------------------------------------------------------------
@dataclass
class Rollout:
    """T batched steps of B environments, arrays shaped (T, B, ...)."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray  # unclipped samples
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray  # scaled by reward_scale
    dones: np.ndarray  # 1 where the episode ended at this step (terminated or truncated)
    last_value: np.ndarray  # (B,) V of the observation after the last step

    @classmethod
    def empty(cls, shapes: Mapping[str, Sequence[int]], action_dim: int, steps: int, n_envs: int) -> Rollout:
        def zeros(*shape: int) -> np.ndarray:
            return np.zeros((steps, n_envs, *shape), dtype=np.float32)

        return cls(
            obs={key: zeros(*shape) for key, shape in shapes.items()},
            actions=zeros(action_dim),
            log_probs=zeros(),
            values=zeros(),
            rewards=zeros(),
            dones=zeros(),
            last_value=np.zeros(n_envs, dtype=np.float32),
        )


def collect_rollout(
    agent: PPOAgent, sim: BatchedClusterSim, obs: Observation, steps: int, generator: torch.Generator
) -> tuple[Rollout, Observation, list[EpisodeStats]]:
    """Step `sim` `steps` times from `obs` with the stochastic policy. Returns the rollout, the next
    observation and the episodes that finished."""
    agent.train(False)  # no dropout or norm statistics here; stated so that the mode is not inherited
    rollout = Rollout.empty(sim.spec.shapes, sim.cfg.action_dim, steps, sim.batch)
    finished: list[EpisodeStats] = []
    for t in range(steps):
        action, log_prob, value = sample_actions(agent, as_tensors(obs), generator)
        result = sim.step(action.numpy())
        for key in rollout.obs:
            rollout.obs[key][t] = obs[key]
        rollout.actions[t], rollout.log_probs[t] = action.numpy(), log_prob.numpy()
        rollout.values[t] = value.numpy()
        rollout.rewards[t] = result.reward * agent.config.reward_scale
        # Time-limit truncation counts as terminal: the envs auto-reset, so `result.obs` of a finished
        # env is already the NEXT episode's first observation and must not be bootstrapped from; the
        # truncated state itself is gone (SAC's buffer stores done the same way).
        rollout.dones[t] = result.terminated | result.truncated
        finished.extend(stats for _, stats in result.finished)
        obs = result.obs
    rollout.last_value[:] = state_values(agent, as_tensors(obs)).numpy()
    return rollout, obs, finished


def compute_gae(
    rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float, gae_lambda: float
) -> tuple[Tensor, Tensor]:
    """(advantages, returns), both (T, B), by generalised advantage estimation. dones[t] = 1 cuts the
    bootstrap and the advantage trace after step t."""
    advantages = torch.zeros_like(rewards)
    next_advantage, next_value = torch.zeros_like(last_value), last_value
    for t in reversed(range(rewards.shape[0])):
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * alive * next_value - values[t]
        next_advantage = delta + gamma * gae_lambda * alive * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values


@dataclass(frozen=True)
class PPOBatch:
    """A rollout flattened to T * B samples, with its advantages and returns: what `ppo_update` reads."""

    obs: dict[str, Tensor]
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    @classmethod
    def from_rollout(cls, rollout: Rollout, gamma: float, gae_lambda: float) -> PPOBatch:
        def tensor(array: np.ndarray) -> Tensor:
            return torch.from_numpy(array)

        advantages, returns = compute_gae(
            tensor(rollout.rewards),
            tensor(rollout.values),
            tensor(rollout.dones),
            tensor(rollout.last_value),
            gamma,
            gae_lambda,
        )
        return cls(
            obs={key: tensor(value).flatten(0, 1) for key, value in rollout.obs.items()},
            actions=tensor(rollout.actions).flatten(0, 1),
            log_probs=tensor(rollout.log_probs).flatten(),
            values=tensor(rollout.values).flatten(),
            advantages=advantages.flatten(),
            returns=returns.flatten(),
        )

    def __len__(self) -> int:
        return self.actions.shape[0]

    def select(self, indices: Tensor) -> PPOBatch:
        return PPOBatch(
            obs={key: value[indices] for key, value in self.obs.items()},
            actions=self.actions[indices],
            log_probs=self.log_probs[indices],
            values=self.values[indices],
            advantages=self.advantages[indices],
            returns=self.returns[indices],
        )


# ----- the update --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PPOUpdateStats:
    """What one PPO update (all epochs and minibatches of one rollout) measured: means over its
    minibatch steps, except explained variance (of the rollout's values, before the update)."""

    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float  # E[(rho - 1) - log rho], the low-variance estimator of KL(pi_old || pi)
    clip_fraction: float  # share of samples with |rho - 1| > clip_coef
    explained_variance: float
    grad_norm: float  # before clipping
    gradient_steps: int

    def metrics(self) -> dict[str, float]:
        """Named for the logs: losses under loss/, the rest under train/."""
        values = dataclasses.asdict(self)
        del values["gradient_steps"]  # a count, in perf/updates_per_s already
        return {
            "loss/policy": values.pop("policy_loss"),
            "loss/value": values.pop("value_loss"),
            **{f"train/{name}": value for name, value in values.items()},
        }


def clipped_policy_loss(ratio: Tensor, advantages: Tensor, clip_coef: float) -> Tensor:
    """-E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)]: PPO's pessimistic surrogate, as a loss."""
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    """1 - Var(target - predicted) / Var(target); nan when the target does not vary."""
    variance = target.var(correction=0).item()
    return math.nan if variance == 0 else 1.0 - (target - predicted).var(correction=0).item() / variance


def ppo_update(
    agent: PPOAgent,
    optimizer: torch.optim.Optimizer,
    rollout: PPOBatch,
    generator: torch.Generator | None = None,
) -> PPOUpdateStats:
    """`epochs` passes over the rollout in shuffled minibatches (orders drawn from `generator`)."""
    config = agent.config
    agent.train()
    steps: list[dict[str, float]] = []
    for _ in range(config.epochs):
        order = torch.randperm(len(rollout), generator=generator)
        for indices in order.chunk(config.minibatches):
            steps.append(minibatch_step(agent, optimizer, rollout.select(indices)))
    means = {name: float(np.mean([step[name] for step in steps])) for name in steps[0]}
    return PPOUpdateStats(
        **means,
        explained_variance=explained_variance(rollout.values, rollout.returns),
        gradient_steps=len(steps),
    )


def minibatch_step(agent: PPOAgent, optimizer: torch.optim.Optimizer, batch: PPOBatch) -> dict[str, float]:
    """One gradient step on the PPO loss; returns its measurements (PPOUpdateStats' names)."""
    config = agent.config
    log_prob, entropy, value = evaluate_actions(agent, batch.obs, batch.actions)
    log_ratio = (log_prob - batch.log_probs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    advantages = normalized(batch.advantages) if config.normalize_advantages else batch.advantages
    policy_loss = clipped_policy_loss(ratio, advantages, config.clip_coef)
    value_loss = 0.5 * (value - batch.returns).square().mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy_mean

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
    optimizer.step()

    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > config.clip_coef).float().mean()
    return {
        "policy_loss": policy_loss.item(),
        "value_loss": value_loss.item(),
        "entropy": entropy_mean.item(),
        "approx_kl": approx_kl.item(),
        "clip_fraction": clip_fraction.item(),
        "grad_norm": float(grad_norm),
    }


def normalized(advantages: Tensor) -> Tensor:
    """Zero mean, unit variance (population variance: a one-sample minibatch gives 0, not nan)."""
    return (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)


# ----- training ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PPOSettings:
    """One PPO run. `sim` is one cluster, or several for cross-size training (one simulator of `n_envs`
    environments per config; each rollout comes from one of them, round-robin). A step is one
    environment transition; the run ends at the first whole rollout reaching `total_steps`."""

    sim: SimConfig | Sequence[SimConfig]
    agent: PPOConfig = field(default_factory=PPOConfig)
    total_steps: int = 2_000_000
    n_envs: int = 64
    seed: int = 0
    out_dir: Path = Path("out/train-ppo")
    # Wall-clock budget: the run also ends at the first whole rollout past it (None: no limit), so PPO
    # gets the same fixed-compute budget as the SAC family's `TrainSettings.time_limit_s`.
    time_limit_s: float | None = None
    eval_every: int = 81_920  # 0: only at the end
    eval_seeds: tuple[int, ...] = VALIDATION_SEEDS
    checkpoint_every: int = 204_800  # 0: only at the end
    keep_checkpoints: int = 2
    resume_from: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.n_envs < 1 or not self.eval_seeds or self.keep_checkpoints < 1:
            raise ValueError("need total_steps >= 1, n_envs >= 1, eval seeds and keep_checkpoints >= 1")
        if not self.sims:
            raise ValueError("need at least one cluster config")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ValueError("time_limit_s must be positive (or None)")
        if len({cfg.action_dim for cfg in self.sims}) > 1:
            # The checkpoint records one action_dim, and LearnedPolicy serves only that one.
            raise ValueError("cross-size training needs one visible_queue (action_dim) for all configs")

    @property
    def sims(self) -> tuple[SimConfig, ...]:
        return (self.sim,) if isinstance(self.sim, SimConfig) else tuple(self.sim)

    @property
    def rollout_size(self) -> int:
        return self.n_envs * self.agent.rollout_steps

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["sim"] = [cfg.to_dict() for cfg in self.sims]
        values["agent"] = self.agent.to_dict()
        values["out_dir"] = str(self.out_dir)
        values["resume_from"] = None if self.resume_from is None else str(self.resume_from)
        values["eval_seeds"] = list(self.eval_seeds)
        return values


def train_ppo(settings: PPOSettings) -> TrainResult:
    configs, config = settings.sims, settings.agent
    out_dir = settings.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    # Build the agent, its optimiser and all generators; or take them from a checkpoint.
    agent = build_ppo_agent(config, seed=settings.seed)
    optimizer = build_optimizer(agent)
    progress, generators = Progress(), Generators.seeded(settings.seed)
    if settings.resume_from is not None:
        progress, generators = resume_ppo(settings, agent, optimizer)
    start_step = progress.env_steps

    # The environments: fresh episodes on workloads derived from (seed, config, start step).
    sims = [
        BatchedClusterSim(cfg, train_env_seeds(settings.seed, index, settings.n_envs, start_step))
        for index, cfg in enumerate(configs)
    ]
    observations = [sim.reset() for sim in sims]

    logger = MetricsLogger(out_dir, start_step)
    timer = Throughput(start_step, progress.updates)
    bar = tqdm(
        total=settings.total_steps,
        initial=start_step,
        unit="step",
        disable=not (settings.progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    deadline = math.inf if settings.time_limit_s is None else time.monotonic() + settings.time_limit_s
    try:
        while progress.env_steps < settings.total_steps and time.monotonic() < deadline:
            before = progress.env_steps
            # 1. A rollout of one simulator (round-robin over the configs) with the stochastic policy.
            k = progress.iteration % len(sims)
            rollout, observations[k], finished = collect_rollout(
                agent, sims[k], observations[k], config.rollout_steps, generators.torch
            )
            progress.env_steps += settings.rollout_size
            progress.iteration += 1
            progress.episodes += len(finished)

            # 2. Advantages, then the PPO update on this rollout alone (on-policy: it is then dropped).
            batch = PPOBatch.from_rollout(rollout, config.gamma, config.gae_lambda)
            stats = ppo_update(agent, optimizer, batch, generators.torch)
            progress.updates += stats.gradient_steps

            # 3. Logs every rollout; evaluation and checkpoints when their period is crossed.
            now = progress.env_steps
            logger.log(now, rollout_metrics(finished, stats, timer.sample(now, progress.updates)))
            if crossed(before, now, settings.eval_every) and now < settings.total_steps:
                evaluate_and_keep_best(agent, settings, progress, logger, bar)
            if crossed(before, now, settings.checkpoint_every) and now < settings.total_steps:
                save_training_checkpoint(agent, optimizer, progress, generators, settings)
            bar.update(now - before)

        # 4. The end: a last evaluation and a last checkpoint.
        final_utility = evaluate_and_keep_best(agent, settings, progress, logger, bar)
        last_checkpoint = save_training_checkpoint(agent, optimizer, progress, generators, settings)
    finally:
        bar.close()
        logger.close()
    elapsed = timer.elapsed()
    best = out_dir / BEST_DIR
    return TrainResult(
        out_dir=out_dir,
        start_step=start_step,
        env_steps=progress.env_steps,
        updates=progress.updates,
        final_eval_utility=final_utility,
        best_eval_utility=progress.best_eval_utility,
        final_checkpoint=last_checkpoint,
        best_checkpoint=best if best.is_dir() else None,
        tensorboard_dir=out_dir / TENSORBOARD_DIR,
        csv_path=out_dir / CSV_FILE,
        elapsed_s=elapsed,
        env_steps_per_s=(progress.env_steps - start_step) / elapsed,
        updates_per_s=(progress.updates - timer.start_updates) / elapsed,
    )


def rollout_metrics(
    finished: Sequence[EpisodeStats], stats: PPOUpdateStats, rates: dict[str, float]
) -> dict[str, float]:
    metrics = {**rates, **stats.metrics()}
    if finished:
        metrics["train/episode_utility"] = float(np.nanmean([e.utility for e in finished]))
        metrics["train/episode_reward"] = float(np.mean([e.total_reward for e in finished]))
    return metrics


def evaluate_and_keep_best(
    agent: PPOAgent, settings: PPOSettings, progress: Progress, logger: MetricsLogger, bar: tqdm
) -> float:
    """The deterministic policy on the validation seeds; a new best utility is saved to best/."""
    metrics = evaluate_agent(agent, settings.sims, settings.eval_seeds)
    utility = metrics["eval/utility"]
    if math.isfinite(utility) and utility > progress.best_eval_utility:
        progress.best_eval_utility = utility
        save_checkpoint(settings.out_dir / BEST_DIR, agent.modules(), checkpoint_config(settings, progress))
    metrics["eval/best_utility"] = progress.best_eval_utility
    logger.log(progress.env_steps, metrics)
    bar.set_postfix(utility=f"{utility:.3f}", best=f"{progress.best_eval_utility:.3f}")
    return utility


# ----- checkpoints and resume --------------------------------------------------------------------------
def checkpoint_config(settings: PPOSettings, progress: Progress) -> dict[str, Any]:
    """Everything needed to rebuild, serve and continue the agent, and to know where it came from.
    The modules' constructor arguments are added by `save_checkpoint` (under "modules")."""
    configs = settings.sims
    return {
        "kind": CHECKPOINT_KIND,
        "algorithm": ALGORITHM,
        "agent": settings.agent.to_dict(),
        "sim_configs": [cfg.to_dict() for cfg in configs],
        "obs_spec_version": OBS_SPEC_VERSION,
        "action_dim": configs[0].action_dim,
        "training": settings.to_dict(),
        "seed": settings.seed,
        "progress": progress.to_dict(),
        "code_version": code_version(),
    }


def save_training_checkpoint(
    agent: PPOAgent,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    generators: Generators,
    settings: PPOSettings,
) -> Path:
    """checkpoints/step_<n>/, written in a .partial directory then renamed: a step directory is whole."""
    target = settings.out_dir / CHECKPOINTS_DIR / f"{STEP_PREFIX}{progress.env_steps:09d}"
    partial = target.with_name(target.name + ".partial")
    for stale in (partial, target):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    save_trainer_state(partial, optimizer, generators)
    save_checkpoint(partial, agent.modules(), checkpoint_config(settings, progress))  # config.json last
    os.replace(partial, target)
    for old in step_checkpoints(settings.out_dir)[: -settings.keep_checkpoints]:
        shutil.rmtree(old)
    return target


def save_trainer_state(directory: Path, optimizer: torch.optim.Optimizer, generators: Generators) -> None:
    """As `train.save_trainer_state` (same files and format), for PPO's one optimiser."""
    tensors: dict[str, Tensor] = {"generator.torch": generators.torch.get_state()}
    index: dict[str, Any] = {
        "format_version": 1,
        "optimizers": {
            OPTIMIZER_NAME: flatten_optimizer_state(OPTIMIZER_NAME, optimizer.state_dict(), tensors)
        },
        "numpy_generator": generators.numpy.bit_generator.state,
    }
    safetensors.torch.save_file(tensors, str(directory / f"{TRAINER_STATE}.safetensors"))
    (directory / f"{TRAINER_STATE}.json").write_text(json.dumps(index, indent=2))


def resume_ppo(
    settings: PPOSettings, agent: PPOAgent, optimizer: torch.optim.Optimizer
) -> tuple[Progress, Generators]:
    """Restore weights, optimiser, generators and counters from a step checkpoint (or a run's latest)."""
    assert settings.resume_from is not None
    directory = resolve_checkpoint(settings.resume_from, prefer_best=False)
    states, saved = load_checkpoint(directory)
    check_resume_matches(saved, settings, directory)
    restore_modules(agent.modules(), states)
    tensors = safetensors.torch.load_file(str(directory / f"{TRAINER_STATE}.safetensors"))
    index = json.loads((directory / f"{TRAINER_STATE}.json").read_text())
    optimizer.load_state_dict(unflatten_optimizer_state(index["optimizers"][OPTIMIZER_NAME], tensors))
    generators = Generators.seeded(settings.seed)
    generators.numpy.bit_generator.state = index["numpy_generator"]
    generators.torch.set_state(tensors["generator.torch"])
    return Progress.from_dict(saved["progress"]), generators


def check_resume_matches(saved: Mapping[str, Any], settings: PPOSettings, directory: Path) -> None:
    expected = {
        "algorithm": ALGORITHM,
        "agent": settings.agent.to_dict(),
        "sim_configs": [cfg.to_dict() for cfg in settings.sims],
        "obs_spec_version": OBS_SPEC_VERSION,
    }
    for key, value in expected.items():
        as_saved = json.loads(json.dumps(value))  # as it reads back from JSON (tuples become lists)
        if as_saved != saved.get(key):
            raise CheckpointError(
                f"{directory}: cannot resume, its {key} is {saved.get(key)!r} but these settings give "
                f"{as_saved!r}"
            )
    if not (directory / f"{TRAINER_STATE}.json").is_file():
        raise CheckpointError(f"{directory}: weights only (e.g. best/); resume from a checkpoints/step_* one")


def ppo_setup_from_checkpoint(path: str | os.PathLike[str]) -> tuple[PPOConfig, tuple[SimConfig, ...]]:
    """The PPO config and cluster configs a checkpoint was trained with (to resume it as it was)."""
    directory = resolve_checkpoint(path, prefer_best=False)
    saved = json.loads((directory / CONFIG_FILE).read_text())
    if saved.get("algorithm") != ALGORITHM:
        raise CheckpointError(f"{directory}: not a PPO checkpoint")
    return PPOConfig.from_dict(saved["agent"]), tuple(
        SimConfig.from_dict(cfg) for cfg in saved["sim_configs"]
    )


__all__ = [
    "PPOAgent",
    "PPOBatch",
    "PPOConfig",
    "PPOSettings",
    "PPOUpdateStats",
    "Rollout",
    "ValueHead",
    "build_optimizer",
    "build_ppo_agent",
    "clipped_policy_loss",
    "collect_rollout",
    "compute_gae",
    "evaluate_actions",
    "ppo_setup_from_checkpoint",
    "ppo_update",
    "resume_ppo",
    "sample_actions",
    "state_values",
    "train_ppo",
]
