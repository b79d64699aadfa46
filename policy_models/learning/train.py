"""Train a learned scheduler (EAT, an ablation, or LAD-TS) with SAC on the batched simulator.

`train(settings)` is the loop; read it top to bottom. Everything it writes goes under `out_dir`:
  tensorboard/                   TensorBoard events (metric names start with train/ eval/ loss/ perf/)
  metrics.csv                    the same scalars, one row per (step, metric)
  checkpoints/step_000012345/    full and resumable: weights, with lad-ts's action prior
                                 (model.safetensors + config.json), the optimisers and torch
                                 generator (trainer_state.safetensors + .json),
                                 the replay buffer(s) (buffer_<i>/)
  best/                          the weights with the best validation utility so far (a policy:
                                 `make_policy("checkpoint:<out_dir>", cfg)` loads it)
A step is one environment transition: B parallel environments make B steps per batched step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import safetensors.torch
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from policy_models.checkpoints import CheckpointError, load_checkpoint, restore_modules, save_checkpoint
from policy_models.config import SimConfig
from policy_models.evaluation import first_episodes
from policy_models.learning import demos
from policy_models.learning.agents import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    STEP_PREFIX,
    Agent,
    AgentConfig,
    build_agent,
    resolve_checkpoint,
    step_checkpoints,
)
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.hints import (
    from_env_action,
    make_hinter,
    observation_shapes,
    to_env_action,
    with_hint,
)
from policy_models.learning.imitation import make_teacher, noisy
from policy_models.learning.sac import (
    Optimizers,
    TensorBatch,
    UpdateStats,
    build_optimizers,
    imitation_update,
    sac_update,
)
from policy_models.nets import as_tensors
from policy_models.nets.encoders import HINT_KEY
from policy_models.obs import OBS_SPEC_VERSION, Observation, ObservationSpec
from policy_models.policies import Policy
from policy_models.policies.learned import LearnedPolicy
from policy_models.sim.batched import BatchedClusterSim, StepResult
from policy_models.sim.stats import EpisodeStats

# Validation workloads for picking the best checkpoint: disjoint from evaluation's test seeds (1000+)
# so that choosing a checkpoint does not peek at the numbers it will be reported on.
VALIDATION_SEEDS: tuple[int, ...] = (500, 501, 502, 503, 504)
# Training workloads are drawn from a seed sequence and shifted past 2**32, so they never coincide
# with the small hand-picked validation, evaluation or metaheuristic seeds.
TRAIN_SEED_OFFSET = 2**32
METRIC_PREFIXES = ("train/", "eval/", "loss/", "perf/")
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
TRAINER_STATE = "trainer_state"  # .safetensors (optimiser and generator tensors) + .json (index)


@dataclass(frozen=True)
class TrainSettings:
    """One training run. `sim` is one cluster, or several for cross-size training (one simulator of
    `n_envs` environments per config, stepped round-robin; each has its own replay buffer)."""

    sim: SimConfig | Sequence[SimConfig]
    agent: AgentConfig = field(default_factory=AgentConfig)
    total_steps: int = 200_000
    n_envs: int = 64
    seed: int = 0
    out_dir: Path = Path("out/train")
    warmup_steps: int = 5_000  # uniform random actions until then, and no updates
    eval_every: int = 20_000  # 0: only at the end
    eval_seeds: tuple[int, ...] = VALIDATION_SEEDS
    checkpoint_every: int = 50_000  # 0: only at the end
    keep_checkpoints: int = 2  # periodic checkpoints kept (each may hold a large replay buffer)
    save_buffer: bool = True
    log_every: int = 2_048
    resume_from: Path | None = None
    progress: bool = True
    # Stop (evaluate, checkpoint) after this many wall seconds of the session, even before
    # total_steps; None: no limit. For fixed-compute budgets, e.g. the CPU profile's 30 minutes.
    time_limit_s: float | None = None
    # Learning from a teacher (`learning.imitation`): a memoryless heuristic whose actions, plus
    # Gaussian noise of std teacher_noise, fill the warm-up; then pretrain_updates updates imitate it
    # (the critic learning its values); after that agent.bc_weight keeps a Q-filtered imitation term.
    teacher: str | None = None
    teacher_noise: float = 0.1
    pretrain_updates: int = 0
    pretrain_lr: float | None = None  # the actor's learning rate while pretraining (None: actor_lr)
    # Demonstrations (`learning.demos`, written by `eat label`): pretraining imitates these recorded
    # rollout-teacher episodes instead of the teacher heuristic, and the critic learns their values.
    demos: Path | None = None
    pretrain_eval_every: int = 0  # validate every this many pretraining updates, keeping the best (0: end)
    demo_deviation_copies: int = 1  # demonstration steps that leave the base policy count this many times

    def __post_init__(self) -> None:
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ValueError("time_limit_s must be positive (or None)")
        if self.total_steps < 1 or self.n_envs < 1 or not self.eval_seeds or self.keep_checkpoints < 1:
            raise ValueError("need total_steps >= 1, n_envs >= 1, eval seeds and keep_checkpoints >= 1")
        check_cluster_configs(self.agent, self.sims)
        if self.teacher is None and self.agent.bc_weight > 0:
            raise ValueError("bc_weight needs a teacher")
        if self.teacher is None and self.demos is None and self.pretrain_updates > 0:
            raise ValueError("pretrain_updates need a teacher or demonstrations")
        if self.demos is not None and self.pretrain_updates < 1:
            raise ValueError("demonstrations are learned in pretraining: give pretrain_updates >= 1")
        if self.pretrain_eval_every < 0 or self.demo_deviation_copies < 1:
            raise ValueError("need pretrain_eval_every >= 0 and demo_deviation_copies >= 1")
        if self.teacher is not None:
            make_teacher(self.teacher, self.sims[0])  # refuses unknown or stateful teachers
        if self.pretrain_updates < 0 or self.teacher_noise < 0:
            raise ValueError("need pretrain_updates >= 0 and teacher_noise >= 0")
        if self.pretrain_lr is not None and self.pretrain_lr <= 0:
            raise ValueError("pretrain_lr must be positive (or None)")

    @property
    def sims(self) -> tuple[SimConfig, ...]:
        return (self.sim,) if isinstance(self.sim, SimConfig) else tuple(self.sim)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["sim"] = [cfg.to_dict() for cfg in self.sims]
        values["agent"] = self.agent.to_dict()
        values["out_dir"] = str(self.out_dir)
        values["resume_from"] = None if self.resume_from is None else str(self.resume_from)
        values["demos"] = None if self.demos is None else str(self.demos)
        values["eval_seeds"] = list(self.eval_seeds)
        return values


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    start_step: int  # > 0 when resumed
    env_steps: int
    updates: int
    final_eval_utility: float
    best_eval_utility: float
    final_checkpoint: Path
    best_checkpoint: Path | None
    tensorboard_dir: Path
    csv_path: Path
    elapsed_s: float
    env_steps_per_s: float  # this session's steps (since start or resume) per wall second
    updates_per_s: float


@dataclass
class Progress:
    """Counters that a checkpoint saves and a resumed run continues from."""

    env_steps: int = 0
    updates: int = 0
    iteration: int = 0  # batched steps taken (picks the simulator, round-robin)
    update_credit: float = 0.0  # fractional updates owed (updates_per_step need not divide n_envs)
    episodes: int = 0
    best_eval_utility: float = -math.inf
    pretrained: bool = False  # the teacher pretraining is done (runs without a teacher: never starts)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["best_eval_utility"] = _finite_or_none(self.best_eval_utility)
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Progress:
        values = dict(data)
        best = values.get("best_eval_utility")
        values["best_eval_utility"] = -math.inf if best is None else best
        return cls(**values)


@dataclass
class Generators:
    """All training randomness: numpy for warm-up actions, torch for the actor's noise."""

    numpy: np.random.Generator
    torch: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> Generators:
        return cls(np.random.default_rng(seed), torch.Generator().manual_seed(seed))


@dataclass
class IntervalLog:
    """Episodes finished and updates made since the last log line."""

    utilities: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    updates: list[UpdateStats] = field(default_factory=list)

    def add(self, finished: list[tuple[int, EpisodeStats]]) -> None:
        for _, stats in finished:
            self.utilities.append(stats.utility)
            self.rewards.append(stats.total_reward)


# ----- the loop ----------------------------------------------------------------------------------------
def train(settings: TrainSettings) -> TrainResult:
    configs = settings.sims
    out_dir = settings.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    # Build the agent, its optimisers, one replay buffer per cluster config, and all generators.
    agent = build_agent(settings.agent, ObservationSpec.from_config(configs[0]), seed=settings.seed)
    optimizers = build_optimizers(agent)
    progress, generators = Progress(), Generators.seeded(settings.seed)
    buffers = [new_buffer(cfg, settings, index) for index, cfg in enumerate(configs)]
    windows = [NStepWindow(settings.agent.n_step, settings.agent.gamma) for _ in configs]
    teachers = [make_teacher(settings.teacher, cfg) for cfg in configs] if settings.teacher else []
    hinters = [make_hinter(settings.agent.hint, cfg) if settings.agent.hint else None for cfg in configs]
    demo_buffers = load_demo_buffers(settings, hinters)
    if settings.resume_from is not None:
        progress, generators, buffers = resume(settings, agent, optimizers, buffers)
    start_step = progress.env_steps

    # The environments: fresh episodes on workloads derived from (seed, config, start step).
    sims = [
        BatchedClusterSim(cfg, train_env_seeds(settings.seed, index, settings.n_envs, start_step))
        for index, cfg in enumerate(configs)
    ]
    observations = [with_hint(sim.reset(), hinter) for sim, hinter in zip(sims, hinters, strict=True)]

    logger = MetricsLogger(out_dir, start_step)
    interval = IntervalLog()
    timer = Throughput(start_step, progress.updates)
    logged_at = start_step
    bar = tqdm(
        total=settings.total_steps,
        initial=start_step,
        unit="step",
        disable=not (settings.progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    try:
        deadline = math.inf if settings.time_limit_s is None else time.monotonic() + settings.time_limit_s
        while progress.env_steps < settings.total_steps and time.monotonic() < deadline:
            before = progress.env_steps
            # 1. One batched step of one simulator (round-robin over the configs).
            k = progress.iteration % len(sims)
            obs = observations[k]
            warmup = progress.env_steps < settings.warmup_steps
            prior = current_prior(agent, obs)
            residual, deadzone = settings.agent.residual, settings.agent.residual_deadzone
            if warmup and teachers:
                env_action = noisy(teachers[k].act(obs), settings.teacher_noise, generators.numpy)
                action, mean_action = from_env_action(env_action, obs, residual, deadzone), None
            else:
                action, mean_action = choose_actions(agent, obs, warmup, generators, prior)
                env_action = to_env_action(action, obs, residual, deadzone)
            # The buffer and the critic see the actor's output (`action`); the simulator its decoding.
            result = sims[k].step(env_action)
            next_obs = with_hint(result.obs, hinters[k])
            # Time-limit truncation is stored as terminal (done = terminated | truncated): the envs
            # auto-reset, so `result.obs` of a finished env is already the NEXT episode's first
            # observation and must not be bootstrapped from; the truncated state itself is gone.
            done = (result.terminated | result.truncated).astype(np.float32)
            next_prior = advance_prior(agent, obs, mean_action, next_obs)
            transition = windows[k].push(obs, action, result.reward, next_obs, done, prior, next_prior)
            if transition is not None:
                buffers[k].add(*transition)
            observations[k] = next_obs
            progress.env_steps += settings.n_envs
            progress.iteration += 1
            record_episodes(result, progress, interval)

            # 2. Once, at the end of the warm-up: imitate the teacher on its own data, or the
            #    demonstrations (validating as it goes when asked to).
            pretraining = bool(teachers or demo_buffers) and not progress.pretrained
            if pretraining and pretraining_due(progress, settings, demo_buffers or buffers):
                sources = demo_buffers or buffers

                def validate() -> None:
                    evaluate_and_keep_best(agent, settings, progress, logger, bar)

                stats = pretrain(
                    agent, optimizers, sources, teachers, settings, generators, progress, validate
                )
                interval.updates.extend(stats)
                progress.pretrained = True
                validate()

            # 3. Gradient updates, on batches from the buffer of the cluster just stepped.
            guided = bool(teachers) and settings.agent.bc_weight > 0
            teacher_is_hint = settings.teacher == settings.agent.hint
            for _ in range(updates_due(progress, settings, len(buffers[k]))):
                sample = buffers[k].sample(settings.agent.batch_size)
                guide = (
                    teacher_guide(teachers[k], sample.obs, settings.agent, teacher_is_hint)
                    if guided
                    else None
                )
                batch = TensorBatch.from_numpy(sample)
                interval.updates.append(sac_update(agent, optimizers, batch, generators.torch, guide))
                progress.updates += 1

            # 4. Logs, evaluation and checkpoints when their period is crossed.
            now = progress.env_steps
            if crossed(before, now, settings.log_every):
                rates = timer.sample(now, progress.updates)
                logger.log(now, training_metrics(interval, rates) | prior_metrics(agent))
                interval, logged_at = IntervalLog(), now
            if crossed(before, now, settings.eval_every) and now < settings.total_steps:
                evaluate_and_keep_best(agent, settings, progress, logger, bar)
            if crossed(before, now, settings.checkpoint_every) and now < settings.total_steps:
                save_training_checkpoint(agent, optimizers, buffers, progress, generators, settings)
            bar.update(now - before)

        # 5. The end: the last training metrics, a last evaluation and a last checkpoint.
        now = progress.env_steps
        if logged_at < now:
            rates = timer.sample(now, progress.updates)
            logger.log(now, training_metrics(interval, rates) | prior_metrics(agent))
        final_utility = evaluate_and_keep_best(agent, settings, progress, logger, bar)
        last_checkpoint = save_training_checkpoint(agent, optimizers, buffers, progress, generators, settings)
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


# ----- the loop's steps --------------------------------------------------------------------------------
@dataclass
class _Pending:
    """One batched step waiting for its n-step return."""

    obs: Observation
    action: np.ndarray
    prior: np.ndarray | None
    ret: np.ndarray  # discounted reward so far, per env
    closed: np.ndarray  # bool per env: the episode ended inside the window (no bootstrap)
    age: int = 0  # rewards added so far


class NStepWindow:
    """Turns one-step transitions of B auto-resetting envs into n-step ones (D2SAC's n-step returns).

    A batched step (s_t, a_t) is emitted n batched steps later as (s_t, a_t, sum_k gamma^k r_{t+k},
    s_{t+n}, done): done = 1 where an env's episode ended inside the window, whose return stops at that
    reward (the rewards after it belong to the next episode) and is not bootstrapped (its s_{t+n} is
    then some state of the next episode, never read). Every bootstrapped transition is exactly n steps
    long, so the TD target discounts by gamma^n (`sac.td_target`). n = 1 passes transitions through
    unchanged. Steps still waiting when training stops (at most n - 1) are not stored, and a resumed
    run starts an empty window."""

    def __init__(self, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.gamma = n, gamma
        self.pending: list[_Pending] = []

    def push(
        self,
        obs: Observation,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: Observation,
        done: np.ndarray,
        prior: np.ndarray | None = None,
        next_prior: np.ndarray | None = None,
    ) -> tuple[Any, ...] | None:
        """Add one batched step; returns the (obs, action, return, next_obs, done, prior, next_prior)
        batch that became complete, or None while the window fills."""
        if self.n == 1:
            return obs, action, reward, next_obs, done, prior, next_prior
        reward = np.asarray(reward, dtype=np.float32)
        ended = np.asarray(done) > 0
        self.pending.append(
            _Pending(
                {name: np.array(value, copy=True) for name, value in obs.items()},
                np.array(action, copy=True),
                None if prior is None else np.array(prior, copy=True),
                np.zeros_like(reward),
                np.zeros(reward.shape, dtype=bool),
            )
        )
        for entry in self.pending:
            live = ~entry.closed
            entry.ret += np.where(live, self.gamma**entry.age * reward, 0.0).astype(np.float32)
            entry.closed |= live & ended
            entry.age += 1
        if self.pending[0].age < self.n:
            return None
        first = self.pending.pop(0)
        return (
            first.obs,
            first.action,
            first.ret,
            next_obs,
            first.closed.astype(np.float32),
            first.prior,
            next_prior,
        )


def check_cluster_configs(agent: AgentConfig, configs: Sequence[SimConfig]) -> None:
    """One action size for all configs (the policy is loaded against it); one observation shape
    when the agent is flat (its input layer is sized for one cluster)."""
    if not configs:
        raise ValueError("need at least one cluster config")
    if len({cfg.action_dim for cfg in configs}) > 1:
        raise ValueError("cross-size training needs one visible_queue (action_dim) for all configs")
    shapes = {json.dumps(ObservationSpec.from_config(cfg).shapes) for cfg in configs}
    if not agent.uses_attention and len(shapes) > 1:
        raise ValueError(
            f"{agent.algorithm} has a flat encoder sized for one cluster; cross-size training "
            "needs an attention agent (eat, eat-d or lad-ts)"
        )


def new_buffer(cfg: SimConfig, settings: TrainSettings, index: int) -> ReplayBuffer:
    shapes = observation_shapes(ObservationSpec.from_config(cfg), hinted=settings.agent.hint is not None)
    return ReplayBuffer(
        shapes,
        cfg.action_dim,
        settings.agent.buffer_capacity,
        seed=settings.seed + index,
        with_priors=settings.agent.uses_prior,
    )


def train_env_seeds(seed: int, config_index: int, n_envs: int, start_step: int) -> list[int]:
    """Per-env workload seeds from (run seed, config, the step the session starts at): a resumed run
    gets new episodes rather than replaying the first ones."""
    words = np.random.SeedSequence([seed, config_index, start_step]).generate_state(n_envs)
    return [TRAIN_SEED_OFFSET + int(w) for w in words]


def choose_actions(
    agent: Agent,
    obs: Observation,
    warmup: bool,
    generators: Generators,
    prior: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(action, mean action). Uniform random actions during warm-up (no mean action: they are not
    the policy's), else a sample of the stochastic policy, its reverse chain started from `prior`
    when given (lad-ts); actions in [-1, 1] (the simulator clips anyway; the critics clip too, so
    storing clipped actions changes no Q)."""
    batch, action_dim = obs["tasks"].shape[0], 2 + obs["tasks"].shape[1]
    if warmup:
        return generators.numpy.uniform(-1.0, 1.0, (batch, action_dim)).astype(np.float32), None
    start = None if prior is None else torch.from_numpy(prior)
    with torch.inference_mode():
        action, _, mean_action = agent.actor(
            agent.encoder(as_tensors(obs)), prior=start, generator=generators.torch
        )
    return action.clamp(-1.0, 1.0).numpy(), mean_action.numpy()


def current_prior(agent: Agent, obs: Observation) -> np.ndarray | None:
    """lad-ts: the chain start for `obs` from the prior as it stands; None (noise) otherwise."""
    return None if agent.prior is None else agent.prior.prior(obs)


def advance_prior(
    agent: Agent, obs: Observation, mean_action: np.ndarray | None, next_obs: Observation
) -> np.ndarray | None:
    """lad-ts: write the chain's output back into the prior (as LAD-TS does), then return the prior
    at s' (the prior' stored with the transition). Warm-up leaves the prior alone: uniform actions
    say nothing about the policy. None for the other algorithms."""
    if agent.prior is None:
        return None
    if mean_action is not None:
        agent.prior.update(obs, mean_action)
    return agent.prior.prior(next_obs)


def teacher_guide(
    teacher: Policy, obs: Observation, agent: AgentConfig, teacher_is_hint: bool
) -> torch.Tensor:
    """What the actor should output to act as the teacher: its actions in [-1, 1], or for a residual
    agent the correction to the hint that gives them (zero where teacher and hint agree). When the
    teacher is the hint heuristic its actions are already in the observation (no second run)."""
    action = obs[HINT_KEY] if teacher_is_hint else np.clip(teacher.act(obs), -1.0, 1.0).astype(np.float32)
    return torch.from_numpy(from_env_action(action, obs, agent.residual, agent.residual_deadzone))


def pretraining_due(progress: Progress, settings: TrainSettings, buffers: Sequence[ReplayBuffer]) -> bool:
    """Past the warm-up, with a batch's worth of the teacher's data in every cluster's buffer."""
    filled = all(len(buffer) >= settings.agent.batch_size for buffer in buffers)
    return progress.env_steps >= settings.warmup_steps and filled


def pretrain(
    agent: Agent,
    optimizers: Optimizers,
    buffers: Sequence[ReplayBuffer],
    teachers: Sequence[Policy],
    settings: TrainSettings,
    generators: Generators,
    progress: Progress,
    validate: Callable[[], None],
) -> list[UpdateStats]:
    """settings.pretrain_updates imitation updates, round-robin over the clusters' buffers, the actor at
    settings.pretrain_lr: imitation is supervised learning and takes a larger step than SAC's actor.

    With demonstrations (`settings.demos`) the buffers hold them and the actions to imitate are their
    own; otherwise the teacher says what it would have done on each sampled state."""
    stats = []
    every = settings.pretrain_eval_every
    with learning_rate(optimizers.actor, settings.pretrain_lr):
        for index in range(settings.pretrain_updates):
            k = index % len(buffers)
            sample = buffers[k].sample(settings.agent.batch_size)
            if settings.demos is not None:
                guide = torch.from_numpy(sample.action)
            else:
                teacher_is_hint = settings.teacher == settings.agent.hint
                guide = teacher_guide(teachers[k], sample.obs, settings.agent, teacher_is_hint)
            batch = TensorBatch.from_numpy(sample)
            stats.append(imitation_update(agent, optimizers, batch, guide, generators.torch))
            progress.updates += 1
            if every and (index + 1) % every == 0 and index + 1 < settings.pretrain_updates:
                validate()
    return stats


def load_demo_buffers(settings: TrainSettings, hinters: Sequence[Policy | None]) -> list[ReplayBuffer]:
    """One replay buffer of demonstrations per training config, or none without `settings.demos`."""
    if settings.demos is None:
        return []
    found = demos.for_configs(demos.load_directory(settings.demos), settings.sims)
    agent = settings.agent
    return [
        demos.replay_buffer(d, hinter, agent, settings.seed + index, settings.demo_deviation_copies)
        for index, (d, hinter) in enumerate(zip(found, hinters, strict=True))
    ]


@contextlib.contextmanager
def learning_rate(optimizer: torch.optim.Optimizer, lr: float | None) -> Iterator[None]:
    """Within the block every parameter group of `optimizer` uses `lr` (None: unchanged)."""
    saved = [group["lr"] for group in optimizer.param_groups]
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    try:
        yield
    finally:
        for group, value in zip(optimizer.param_groups, saved, strict=True):
            group["lr"] = value


def record_episodes(result: StepResult, progress: Progress, interval: IntervalLog) -> None:
    finished = result.finished
    progress.episodes += len(finished)
    interval.add(finished)


def updates_due(progress: Progress, settings: TrainSettings, buffer_size: int) -> int:
    """Whole updates owed for the steps just taken (once past warm-up with a batch's worth stored)."""
    if progress.env_steps < settings.warmup_steps or buffer_size < settings.agent.batch_size:
        return 0
    progress.update_credit += settings.n_envs * settings.agent.updates_per_step
    due = int(progress.update_credit)
    progress.update_credit -= due
    return due


def crossed(before: int, now: int, every: int) -> bool:
    """True when a multiple of `every` lies in (before, now]; never when every <= 0."""
    return every > 0 and before // every < now // every


# ----- metrics -----------------------------------------------------------------------------------------
class Throughput:
    """Steps and updates per wall second, over the whole session and since the last sample."""

    def __init__(self, start_step: int, start_updates: int) -> None:
        self.start_updates = start_updates
        self.start = self.last = time.perf_counter()
        self.last_step, self.last_updates = start_step, start_updates

    def sample(self, step: int, updates: int) -> dict[str, float]:
        now = time.perf_counter()
        seconds = max(now - self.last, 1e-9)
        rates = {
            "perf/env_steps_per_s": (step - self.last_step) / seconds,
            "perf/updates_per_s": (updates - self.last_updates) / seconds,
            "perf/elapsed_s": now - self.start,
        }
        self.last, self.last_step, self.last_updates = now, step, updates
        return rates

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)


def prior_metrics(agent: Agent) -> dict[str, float]:
    """lad-ts: the share of state buckets whose prior has moved at least once (coverage)."""
    if agent.prior is None:
        return {}
    seen = agent.prior.decision_updates > 0
    return {"train/prior_buckets_seen": seen.float().mean().item()}


def training_metrics(interval: IntervalLog, rates: dict[str, float]) -> dict[str, float]:
    metrics = dict(rates)
    if interval.utilities:
        metrics["train/episode_utility"] = float(np.nanmean(interval.utilities))
        metrics["train/episode_reward"] = float(np.mean(interval.rewards))
    if interval.updates:  # means over the interval's updates: one update's losses are noisy
        # Pretraining and fine-tuning updates report different metrics: average each over the
        # updates that report it.
        per_update = [update.metrics() for update in interval.updates]
        names = dict.fromkeys(name for m in per_update for name in m)
        metrics.update({name: float(np.mean([m[name] for m in per_update if name in m])) for name in names})
    return metrics


class MetricsLogger:
    """Scalars to TensorBoard and to a long-format CSV (step, metric, value). A resumed run drops the
    rows logged after its checkpoint (TensorBoard purges them too), so the logs read as one run."""

    def __init__(self, out_dir: Path, start_step: int) -> None:
        self.csv_path = out_dir / CSV_FILE
        kept = _csv_rows_up_to(self.csv_path, start_step) if start_step > 0 else []
        self._file = self.csv_path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(["step", "metric", "value"])
        self._csv.writerows(kept)
        self.writer = SummaryWriter(
            log_dir=str(out_dir / TENSORBOARD_DIR), purge_step=start_step if start_step > 0 else None
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            if not name.startswith(METRIC_PREFIXES):
                raise ValueError(f"metric {name!r} must start with one of {METRIC_PREFIXES}")
            self.writer.add_scalar(name, value, step)
            self._csv.writerow([step, name, value])
        self._file.flush()

    def close(self) -> None:
        self.writer.close()
        self._file.close()


def _csv_rows_up_to(path: Path, step: int) -> list[list[str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [row for row in rows if int(row[0]) <= step]


# ----- evaluation --------------------------------------------------------------------------------------
class ServableAgent(Protocol):
    """What evaluation needs of an agent (the SAC family's `Agent`, PPO's `PPOAgent`)."""

    encoder: torch.nn.Module
    actor: torch.nn.Module


def evaluate_agent(
    agent: ServableAgent, configs: Sequence[SimConfig], seeds: Sequence[int]
) -> dict[str, float]:
    """The deterministic policy's first episode on each seed, per config; eval/utility is the mean
    over configs (per-config values are added when there are several)."""
    per_config = []
    hint = getattr(getattr(agent, "config", None), "hint", None)  # PPO agents are never hinted
    for cfg in configs:
        # lad-ts: the policy reads the training prior frozen (LearnedPolicy never updates it).
        hinter = make_hinter(hint, cfg) if hint else None
        config = getattr(agent, "config", None)
        policy = LearnedPolicy(
            cfg,
            agent.encoder,
            agent.actor,
            getattr(agent, "prior", None),
            hinter=hinter,
            residual=bool(getattr(config, "residual", False)),
            residual_deadzone=float(getattr(config, "residual_deadzone", 0.0)),
        )
        episodes = first_episodes(policy, cfg, seeds)
        per_config.append(episode_means(episodes))
    metrics = {name: float(np.mean([m[name] for m in per_config])) for name in per_config[0]}
    if len(configs) > 1:
        for cfg, means in zip(configs, per_config, strict=True):
            metrics[f"eval/utility_n{cfg.n_servers}_rate{cfg.arrival_rate:g}"] = means["eval/utility"]
    return metrics


def episode_means(episodes: Sequence[EpisodeStats]) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    return {
        "eval/utility": mean([e.utility for e in episodes]),
        "eval/response_s": mean([e.mean_response_s for e in episodes]),
        "eval/quality": mean([e.mean_quality for e in episodes]),
        "eval/reload_rate": mean([e.reload_rate for e in episodes]),
        "eval/unserved": mean([float(e.unserved) for e in episodes]),
    }


def evaluate_and_keep_best(
    agent: Agent, settings: TrainSettings, progress: Progress, logger: MetricsLogger, bar: tqdm
) -> float:
    """Evaluate on the validation seeds; a new best utility is saved to best/. Returns the utility.

    Only a policy that has learned something may become the best: before the first update a residual
    agent IS its hint heuristic (`learning.hints`), and best/ must not ship the heuristic as if trained."""
    metrics = evaluate_agent(agent, settings.sims, settings.eval_seeds)
    utility = metrics["eval/utility"]
    if math.isfinite(utility) and utility > progress.best_eval_utility and progress.updates > 0:
        progress.best_eval_utility = utility
        save_checkpoint(settings.out_dir / BEST_DIR, agent.modules(), checkpoint_config(settings, progress))
    metrics["eval/best_utility"] = progress.best_eval_utility
    logger.log(progress.env_steps, metrics)
    bar.set_postfix(utility=f"{utility:.3f}", best=f"{progress.best_eval_utility:.3f}")
    return utility


# ----- checkpoints -------------------------------------------------------------------------------------
def checkpoint_config(settings: TrainSettings, progress: Progress) -> dict[str, Any]:
    """Everything needed to rebuild, serve and continue the agent, and to know where it came from."""
    configs = settings.sims
    return {
        "kind": "eat-serve/sac-agent",
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
    agent: Agent,
    optimizers: Optimizers,
    buffers: Sequence[ReplayBuffer],
    progress: Progress,
    generators: Generators,
    settings: TrainSettings,
) -> Path:
    """checkpoints/step_<n>/, written in a .partial directory then renamed: a step directory is whole."""
    root = settings.out_dir / CHECKPOINTS_DIR
    target = root / f"{STEP_PREFIX}{progress.env_steps:09d}"
    partial = target.with_name(target.name + ".partial")
    for stale in (partial, target):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    save_trainer_state(partial, optimizers, generators)
    if settings.save_buffer:
        for index, buffer in enumerate(buffers):
            buffer.save(partial / f"buffer_{index}")
    save_checkpoint(partial, agent.modules(), checkpoint_config(settings, progress))  # config.json last
    os.replace(partial, target)
    for old in step_checkpoints(settings.out_dir)[: -settings.keep_checkpoints]:
        shutil.rmtree(old)
    return target


def save_trainer_state(directory: Path, optimizers: Optimizers, generators: Generators) -> None:
    """Optimiser state tensors and the torch generator as safetensors, the rest as a JSON index."""
    tensors: dict[str, torch.Tensor] = {"generator.torch": generators.torch.get_state()}
    index: dict[str, Any] = {
        "format_version": 1,
        "optimizers": {},
        "numpy_generator": generators.numpy.bit_generator.state,
    }
    for name, optimizer in optimizers.named().items():
        index["optimizers"][name] = flatten_optimizer_state(name, optimizer.state_dict(), tensors)
    safetensors.torch.save_file(tensors, str(directory / f"{TRAINER_STATE}.safetensors"))
    (directory / f"{TRAINER_STATE}.json").write_text(json.dumps(index, indent=2))


def flatten_optimizer_state(
    name: str, state_dict: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Moves every tensor of `state_dict` into `tensors` under "optimizer.<name>.<param>.<key>" and
    returns the JSON index: param_groups as they are, state entries naming their tensor."""
    state_index: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        described: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensor_key = f"optimizer.{name}.{param_id}.{key}"
                tensors[tensor_key] = value.detach().cpu().clone(memory_format=torch.contiguous_format)
                described[key] = {"tensor": tensor_key}
            else:
                described[key] = {"value": value}
        state_index[str(param_id)] = described
    return {"param_groups": state_dict["param_groups"], "state": state_index}


def unflatten_optimizer_state(index: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state = {
        int(param_id): {
            key: tensors[entry["tensor"]] if "tensor" in entry else entry["value"]
            for key, entry in entries.items()
        }
        for param_id, entries in index["state"].items()
    }
    return {"state": state, "param_groups": index["param_groups"]}


def resume(
    settings: TrainSettings, agent: Agent, optimizers: Optimizers, fresh_buffers: list[ReplayBuffer]
) -> tuple[Progress, Generators, list[ReplayBuffer]]:
    """Restore weights, optimisers, generators, counters and replay buffers from a step checkpoint."""
    assert settings.resume_from is not None
    directory = resolve_checkpoint(settings.resume_from, prefer_best=False)
    states, saved = load_checkpoint(directory)
    check_resume_matches(saved, settings, directory)
    restore_modules(agent.modules(), states)
    tensors = safetensors.torch.load_file(str(directory / f"{TRAINER_STATE}.safetensors"))
    index = json.loads((directory / f"{TRAINER_STATE}.json").read_text())
    for name, optimizer in optimizers.named().items():
        optimizer.load_state_dict(unflatten_optimizer_state(index["optimizers"][name], tensors))
    generators = Generators.seeded(settings.seed)
    generators.numpy.bit_generator.state = index["numpy_generator"]
    generators.torch.set_state(tensors["generator.torch"])
    progress = Progress.from_dict(saved["progress"])
    buffers = []
    for index, fresh in enumerate(fresh_buffers):
        path = directory / f"buffer_{index}"
        # The buffer's sampling generator is not saved; reseeding it from the step is deterministic.
        seed = settings.seed + index + progress.env_steps
        buffers.append(ReplayBuffer.load(path, seed=seed) if path.is_dir() else fresh)
    return progress, generators, buffers


def check_resume_matches(saved: Mapping[str, Any], settings: TrainSettings, directory: Path) -> None:
    expected = {
        "agent": settings.agent.to_dict(),
        "sim_configs": [cfg.to_dict() for cfg in settings.sims],
        "obs_spec_version": OBS_SPEC_VERSION,
    }
    for key, value in expected.items():
        if _json_round_trip(value) != saved.get(key):
            raise CheckpointError(
                f"{directory}: cannot resume, its {key} is {saved.get(key)!r} but these settings give "
                f"{_json_round_trip(value)!r} (use `training_setup_from_checkpoint`)"
            )
    if not (directory / f"{TRAINER_STATE}.json").is_file():
        raise CheckpointError(f"{directory}: weights only (e.g. best/); resume from a checkpoints/step_* one")


def training_setup_from_checkpoint(path: str | os.PathLike[str]) -> tuple[AgentConfig, tuple[SimConfig, ...]]:
    """The agent config and cluster configs a checkpoint was trained with (to resume it as it was)."""
    directory = resolve_checkpoint(path, prefer_best=False)
    saved = json.loads((directory / "config.json").read_text())
    agent = AgentConfig.from_dict(saved["agent"])
    return agent, tuple(SimConfig.from_dict(cfg) for cfg in saved["sim_configs"])


def checkpoint_teacher(path: str | os.PathLike[str]) -> str | None:
    """The teacher a checkpoint's run learned from (None: none), so a resumed run keeps it."""
    directory = resolve_checkpoint(path, prefer_best=False)
    saved = json.loads((directory / "config.json").read_text())
    return saved.get("training", {}).get("teacher")


def code_version() -> dict[str, str | None]:
    """The installed package version and, where this is a git checkout, `git describe` (read-only)."""
    try:
        package: str | None = importlib.metadata.version("eat-serve")
    except importlib.metadata.PackageNotFoundError:
        package = None
    return {"package": package, "git": _git_describe()}


def _git_describe() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # never take the index lock
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _json_round_trip(value: Any) -> Any:
    """As the value reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
