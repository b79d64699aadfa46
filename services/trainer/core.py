"""The online trainer's pure core: live transitions in, SAC updates, simulator evaluation, promotion.

No broker and no threads here; the service (`service.py`) drives it:

    add_transition(t)        snapshot -> observation (policy_models.live) -> replay buffer
    maybe_update(n)          up to n SAC updates of those owed (updates_per_transition per transition
                             stored once the buffer holds warmup_transitions)
    candidate()              a frozen copy of the current agent, to evaluate while training goes on
    evaluate(candidate)      candidate vs the serving policy on the simulator, same seeds
    finish_evaluation(...)   record the result; promote when the candidate wins -> Promotion
    save(state_dir) / start(config, state_dir)

Choices, and why:
- One-step transitions (n_step = 1), whatever the preset says. Live transitions come one by one from
  several episodes and not in step order (the aggregator publishes a launch only once its quality is
  known, a wait at once), so the consecutive rewards an n-step return needs are not at hand; each
  Experience is a complete (s, a, r, s', done) on its own. Weights do not depend on n_step, so a
  checkpoint trained offline with 3-step returns still initialises the agent.
- Truncation: done = Experience.done only; a truncated transition is stored with done = 0 and
  bootstrapped from its s'. The offline loop (`learning.train`) stores truncation as terminal only
  because its environments auto-reset and the truncated s' is lost; a live Experience carries its s'.
- Duplicates (at-least-once delivery) are recognised by (episode_id, step_index) among the recent
  keys and stored once.
- The candidate is the agent acting deterministically (LearnedPolicy), as `eat eval` scores it; the
  serving policy's per-seed utilities are measured once per serving version (evaluation is
  deterministic) and reused until the next promotion.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from policy_models.checkpoints import CONFIG_FILE, CheckpointError, load_checkpoint, restore_modules
from policy_models.config import SimConfig
from policy_models.evaluation import estimate, first_episodes
from policy_models.learning.agents import Agent, AgentConfig, build_agent, resolve_checkpoint
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.sac import Optimizers, TensorBatch, UpdateStats, build_optimizers, sac_update
from policy_models.learning.train import VALIDATION_SEEDS, Generators, code_version
from policy_models.live import ModelCatalog, Snapshot, observe
from policy_models.obs import OBS_SPEC_VERSION, Observation, ObservationSpec
from policy_models.policies import make_policy
from policy_models.policies.base import Policy
from policy_models.policies.learned import LearnedPolicy
from policy_models.reward import reward_range
from services.common.domain import Transition  # shared with the protobuf edge; re-exported here
from services.trainer import state

CHECKPOINT_PREFIX = "checkpoint:"
CHECKPOINT_KIND = "eat-serve/sac-agent"  # what `eat train` writes too: an agent with all its modules
STATE_KIND = "eat-serve/online-trainer"
RECENT_KEYS = 10_000  # transition keys remembered to drop redelivered duplicates
REWARD_MARGIN = 0.5  # of the reward's range, on each side (see OnlineTrainer.reward_bounds)


class InvalidTransition(ValueError):
    """A transition the trainer cannot learn from (wrong spec version, action size, non-finite)."""


# ----- configuration -----------------------------------------------------------------------------------
def preset_agent_config(preset: str, algorithm: str) -> AgentConfig:
    """The networks and SAC settings of a named preset ("cpu-fast" or "paper")."""
    if preset == "cpu-fast":
        return AgentConfig.cpu_fast(algorithm)  # type: ignore[arg-type]
    if preset == "paper":
        return AgentConfig.paper(algorithm)  # type: ignore[arg-type]
    raise ValueError(f"unknown preset {preset!r}")


def checkpoint_agent_config(path: str | Path) -> AgentConfig:
    """The agent config a SAC-family checkpoint (or training run) was built with."""
    directory = resolve_checkpoint(path, prefer_best=True)
    saved = json.loads((directory / CONFIG_FILE).read_text())
    if "agent" not in saved:
        raise CheckpointError(f"{directory}: not a SAC-family agent checkpoint (no 'agent' config)")
    return AgentConfig.from_dict(saved["agent"])


def online_agent_config(base: AgentConfig, batch_size: int, buffer_capacity: int) -> AgentConfig:
    """`base` with the service's batch size and buffer, and one-step returns (module docstring)."""
    return replace(base, n_step=1, batch_size=batch_size, buffer_capacity=buffer_capacity)


@dataclass(frozen=True)
class TrainerConfig:
    """Everything the core needs, as plain values (the service builds it from TrainerSettings)."""

    sim: SimConfig  # the live cluster's config: observation shapes, action size
    eval_sim: SimConfig  # the simulated setting candidates are judged on
    models: tuple[str, ...]
    agent: AgentConfig
    policy_dir: Path
    serving_policy: str = "reuse"  # what serves before the first promotion
    warmup_transitions: int = 256
    updates_per_transition: float = 1.0
    evaluate_every_updates: int = 500
    eval_seeds: tuple[int, ...] = VALIDATION_SEEDS
    min_improvement: float = 0.0
    seed: int = 0
    init_checkpoint: Path | None = None

    def __post_init__(self) -> None:
        if self.sim.action_dim != self.eval_sim.action_dim:
            raise ValueError("the evaluation setting must have the live cluster's action size")
        if not self.eval_seeds or self.warmup_transitions < 1 or self.evaluate_every_updates < 1:
            raise ValueError("need eval seeds, warmup_transitions >= 1 and evaluate_every_updates >= 1")

    @property
    def settings_text(self) -> str:
        cfg, seeds = self.eval_sim, self.eval_seeds
        return (
            f"{cfg.mode} N={cfg.n_servers} lambda={cfg.arrival_rate:g} profile={cfg.profile_name} "
            f"models={len(self.models)} tasks={cfg.tasks_per_episode} seeds={seeds[0]}..{seeds[-1]}"
        )


# ----- values passed in and out ------------------------------------------------------------------------
@dataclass(frozen=True)
class UpdateRound:
    """What one call of `maybe_update` did."""

    updates: int  # made in this call
    owed: int  # whole updates still owed after it
    last: UpdateStats | None = None  # the last update's losses


@dataclass(frozen=True)
class Candidate:
    """A frozen copy of the agent's modules at `updates`, evaluated while training goes on."""

    modules: dict[str, nn.Module]
    agent: AgentConfig
    updates: int
    transitions: int

    def policy(self, cfg: SimConfig) -> LearnedPolicy:
        return LearnedPolicy(cfg, self.modules["encoder"], self.modules["actor"], self.modules.get("prior"))


@dataclass(frozen=True)
class ServingBaseline:
    """The policy a candidate must beat, and its per-seed utilities once measured."""

    version: int  # 0 = the configured non-learned policy
    policy: str  # a make_policy name: "reuse", or "checkpoint:<dir>"
    utilities: tuple[float, ...] | None = None


@dataclass(frozen=True)
class EvaluationResult:
    candidate_utility: float  # mean utility (reward per task) over the seeds
    serving_utility: float
    diff_ci95: float  # half-width of the 95% CI of the per-seed difference (nan with one seed)
    serving_version: int
    serving_policy: str
    seeds: tuple[int, ...]
    settings: str
    updates: int  # the candidate's update count
    promote: bool
    candidate_utilities: tuple[float, ...] = ()
    serving_utilities: tuple[float, ...] = ()

    @property
    def episodes(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: _json_number(value) for key, value in values.items()}


@dataclass(frozen=True)
class Promotion:
    """A candidate written as policy `version` in `directory` (absolute)."""

    version: int
    directory: Path
    algorithm: str
    obs_spec_version: int
    created_at: float  # epoch seconds
    evaluation: EvaluationResult


@dataclass
class Counters:
    """The trainer's progress, saved with its state."""

    transitions: int = 0  # stored in the buffer
    duplicates: int = 0  # redelivered transitions dropped
    updates: int = 0
    update_credit: float = 0.0  # updates owed (fractional: updates_per_transition need not be whole)
    evaluations: int = 0
    promotions: int = 0
    updates_at_evaluation: int = 0
    announced_version: int = 0  # the newest version whose PolicyUpdated was published
    last_candidate_utility: float | None = None
    last_serving_utility: float | None = None


class RecentKeys:
    """The newest (episode_id, step_index) keys, oldest forgotten first."""

    def __init__(self, capacity: int = RECENT_KEYS, keys: Iterable[tuple[str, int]] = ()) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, int], None] = OrderedDict()
        for key in keys:
            self.add(key)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, int]) -> None:
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def to_list(self) -> list[list[str | int]]:
        return [[episode, step] for episode, step in self._keys]


# ----- the trainer -------------------------------------------------------------------------------------
class OnlineTrainer:
    """Replay buffer, SAC agent and promotion rule of one trainer process (module docstring)."""

    def __init__(
        self,
        config: TrainerConfig,
        agent: Agent,
        optimizers: Optimizers,
        buffer: ReplayBuffer,
        generators: Generators,
        counters: Counters | None = None,
        recent: RecentKeys | None = None,
    ) -> None:
        self.config = config
        self.agent, self.optimizers, self.buffer, self.generators = agent, optimizers, buffer, generators
        self.counters = counters or Counters()
        self.recent = recent or RecentKeys()
        self.catalog = ModelCatalog(config.models)
        self.serving = recover_serving(config.policy_dir, config.serving_policy)

    # ----- construction ----------------------------------------------------------------------------
    @classmethod
    def start(cls, config: TrainerConfig, state_dir: Path | None = None) -> OnlineTrainer:
        """Resume the state saved under `state_dir` when there is one, else start afresh (from
        config.init_checkpoint's weights when given)."""
        spec = ObservationSpec.from_config(config.sim)
        agent = build_agent(config.agent, spec, seed=config.seed)
        optimizers = build_optimizers(agent)
        found = state.find_state(state_dir) if state_dir is not None else None
        if found is None:
            if config.init_checkpoint is not None:
                load_initial_weights(agent, config.init_checkpoint)
            buffer = new_buffer(config)
            return cls(config, agent, optimizers, buffer, Generators.seeded(config.seed))
        saved = state.load_state(found, agent, optimizers, state_config(config), config.seed)
        check_buffer(saved.buffer, config, found)
        counters = Counters(**saved.progress["counters"])
        recent = RecentKeys(keys=((str(e), int(s)) for e, s in saved.progress.get("recent_keys", [])))
        return cls(config, agent, optimizers, saved.buffer, saved.generators, counters, recent)

    # ----- transitions -----------------------------------------------------------------------------
    def add_transition(self, transition: Transition) -> bool:
        """Store one transition; False for a duplicate (already stored). Raises InvalidTransition."""
        action = self._check(transition)
        key = (transition.episode_id, transition.step_index)
        if transition.episode_id and key in self.recent:
            self.counters.duplicates += 1
            return False
        obs = observe(transition.observation, self.config.sim, self.catalog)
        next_obs = observe(transition.next_observation, self.config.sim, self.catalog)
        prior, next_prior = self._priors(obs, next_obs)
        self.buffer.add(
            obs,
            action[None],
            np.array([transition.reward], dtype=np.float32),
            next_obs,
            np.array([1.0 if transition.done else 0.0], dtype=np.float32),  # truncated: bootstrap
            prior=prior,
            next_prior=next_prior,
        )
        if transition.episode_id:
            self.recent.add(key)
        self.counters.transitions += 1
        if len(self.buffer) >= self.config.warmup_transitions:
            self.counters.update_credit += self.config.updates_per_transition
        return True

    def _check(self, transition: Transition) -> np.ndarray:
        if transition.obs_spec_version != OBS_SPEC_VERSION:
            raise InvalidTransition(
                f"obs_spec_version {transition.obs_spec_version}, this trainer encodes v{OBS_SPEC_VERSION}"
            )
        action = np.asarray(transition.action, dtype=np.float32)
        if action.shape != (self.config.sim.action_dim,):
            raise InvalidTransition(
                f"action has {action.size} values, the policy's action has {self.config.sim.action_dim}"
            )
        if not (np.all(np.isfinite(action)) and math.isfinite(transition.reward)):
            raise InvalidTransition("action and reward must be finite")
        lo, hi = self.reward_bounds
        if not lo <= transition.reward <= hi:
            raise InvalidTransition(
                f"reward {transition.reward:g} outside [{lo:g}, {hi:g}], the reward's range with a margin"
            )
        for snapshot in (transition.observation, transition.next_observation):
            self._check_queue(snapshot)
        return np.clip(action, -1.0, 1.0)  # as the simulator and the critics read actions

    def _check_queue(self, snapshot: Snapshot) -> None:
        """The observation encodes only catalogued models and gangs of at least one server."""
        for task in snapshot.queue[: self.config.sim.visible_queue]:
            if self.catalog.id_of(task.model) == 0:
                raise InvalidTransition(
                    f"task {task.task_id} asks for model {task.model!r}, not in {self.catalog.names}"
                )
            if task.patches < 1:
                raise InvalidTransition(f"task {task.task_id} has {task.patches} patches")

    def _priors(self, obs: Observation, next_obs: Observation) -> tuple[np.ndarray | None, np.ndarray | None]:
        """lad-ts: the chain starts at s and s' from the prior as it stands (the serving policy's prior
        is a snapshot of this one); None for the other algorithms."""
        prior = self.agent.prior
        return (None, None) if prior is None else (prior.prior(obs), prior.prior(next_obs))

    @property
    def reward_bounds(self) -> tuple[float, float]:
        """The rewards a live transition may carry: the reward function's range widened by half its
        width (rounding, a quality a little outside the CLIP scale); anything else is forged or broken
        and would swamp the critic's targets."""
        lo, hi = reward_range(self.config.sim.reward)
        margin = REWARD_MARGIN * (hi - lo)
        return lo - margin, hi + margin

    # ----- updates ---------------------------------------------------------------------------------
    @property
    def updates_owed(self) -> int:
        return int(self.counters.update_credit)

    def maybe_update(self, max_updates: int, time_budget_s: float | None = None) -> UpdateRound:
        """Up to `max_updates` of the owed SAC updates, stopping early once `time_budget_s` is spent
        (at least one runs when any is owed)."""
        started = time.perf_counter()
        done, last = 0, None
        while done < max_updates and self.updates_owed > 0:
            batch = TensorBatch.from_numpy(self.buffer.sample(self.agent.config.batch_size))
            last = sac_update(self.agent, self.optimizers, batch, self.generators.torch)
            self.counters.update_credit -= 1.0
            self.counters.updates += 1
            done += 1
            if time_budget_s is not None and time.perf_counter() - started >= time_budget_s:
                break
        return UpdateRound(done, self.updates_owed, last)

    # ----- evaluation and promotion ----------------------------------------------------------------
    @property
    def evaluation_due(self) -> bool:
        return (
            self.counters.updates - self.counters.updates_at_evaluation >= self.config.evaluate_every_updates
        )

    def candidate(self) -> Candidate:
        modules = {name: copy.deepcopy(module) for name, module in self.agent.modules().items()}
        return Candidate(modules, self.agent.config, self.counters.updates, self.counters.transitions)

    def evaluate(self, candidate: Candidate | None = None) -> EvaluationResult:
        """Candidate and serving policy on the same seeds. Reads but never changes the trainer, so it
        may run on another thread while the trainer takes transitions."""
        candidate = candidate or self.candidate()
        cfg, seeds, serving = self.config.eval_sim, self.config.eval_seeds, self.serving
        serving_utilities = serving.utilities or policy_utilities(
            make_policy(serving.policy, cfg), cfg, seeds
        )
        candidate_utilities = policy_utilities(candidate.policy(cfg), cfg, seeds)
        return judge(candidate_utilities, serving_utilities, serving, candidate.updates, self.config)

    def finish_evaluation(self, candidate: Candidate, result: EvaluationResult) -> Promotion | None:
        """Record an evaluation of `candidate`; promote it when it won. A result measured against a
        serving version that has changed since is recorded but promotes nothing."""
        counters = self.counters
        counters.evaluations += 1
        counters.updates_at_evaluation = max(counters.updates_at_evaluation, candidate.updates)
        counters.last_candidate_utility = _finite_or_none(result.candidate_utility)
        counters.last_serving_utility = _finite_or_none(result.serving_utility)
        if result.serving_version != self.serving.version:
            return None
        if self.serving.utilities is None:
            self.serving = replace(self.serving, utilities=result.serving_utilities)
        return self.promote(candidate, result) if result.promote else None

    def evaluation_failed(self, candidate: Candidate) -> None:
        """The next evaluation waits for another evaluate_every_updates updates, not retrying at once."""
        self.counters.updates_at_evaluation = max(self.counters.updates_at_evaluation, candidate.updates)

    def evaluate_and_promote(self) -> tuple[EvaluationResult, Promotion | None]:
        """Evaluate the agent as it is now and promote it if it wins (synchronously)."""
        candidate = self.candidate()
        result = self.evaluate(candidate)
        return result, self.finish_evaluation(candidate, result)

    def promote(self, candidate: Candidate, result: EvaluationResult) -> Promotion:
        """Write `candidate` as the next policy version; it becomes the serving baseline."""
        version = self.serving.version + 1
        directory = state.version_directory(self.config.policy_dir, version).resolve()
        state.write_policy_checkpoint(
            directory, candidate.modules, self._policy_config(candidate, result, version)
        )
        self.serving = ServingBaseline(version, f"{CHECKPOINT_PREFIX}{directory}", result.candidate_utilities)
        self.counters.promotions += 1
        return Promotion(version, directory, candidate.agent.algorithm, OBS_SPEC_VERSION, time.time(), result)

    def _policy_config(self, candidate: Candidate, result: EvaluationResult, version: int) -> dict[str, Any]:
        """The checkpoint's JSON: what `LearnedPolicy.from_checkpoint` and `eat train` read, and where
        the policy came from."""
        config = self.config
        return {
            "kind": CHECKPOINT_KIND,
            "algorithm": candidate.agent.algorithm,
            "agent": candidate.agent.to_dict(),
            "sim_configs": [config.eval_sim.to_dict()],
            "obs_spec_version": OBS_SPEC_VERSION,
            "action_dim": config.sim.action_dim,
            "version": version,
            "evaluation": result.to_dict(),
            "training": {
                "online": True,
                "seed": config.seed,
                "models": list(config.models),
                "transitions": candidate.transitions,
                "updates": candidate.updates,
            },
            "code_version": code_version(),
        }

    def unannounced(self) -> Promotion | None:
        """The newest promoted version when its PolicyUpdated may not have gone out (a crash between
        writing it and publishing), rebuilt from its checkpoint; None when it was announced."""
        if self.serving.version <= self.counters.announced_version:
            return None
        directory = state.version_directory(self.config.policy_dir, self.serving.version).resolve()
        return promotion_from_checkpoint(directory, self.serving.version)

    def announced(self, promotion: Promotion) -> None:
        self.counters.announced_version = max(self.counters.announced_version, promotion.version)

    # ----- persistence -----------------------------------------------------------------------------
    def save(self, state_dir: Path) -> Path:
        """Everything needed to continue after a restart, under <state_dir>/trainer/."""
        progress = {"counters": asdict(self.counters), "recent_keys": self.recent.to_list()}
        return state.save_state(
            state_dir,
            self.agent,
            self.optimizers,
            self.buffer,
            self.generators,
            state_config(self.config),
            progress,
        )


# ----- helpers -----------------------------------------------------------------------------------------
def new_buffer(config: TrainerConfig) -> ReplayBuffer:
    spec = ObservationSpec.from_config(config.sim)
    return ReplayBuffer(
        spec.shapes,
        config.sim.action_dim,
        config.agent.buffer_capacity,
        seed=config.seed,
        with_priors=config.agent.uses_prior,
    )


def state_config(config: TrainerConfig) -> dict[str, Any]:
    """The JSON saved with the trainer state; RESUME_KEYS of it must match to resume."""
    spec = ObservationSpec.from_config(config.sim)
    return {
        "kind": STATE_KIND,
        # batch_size may change between runs: it shapes no weight and no saved tensor.
        "agent": {
            k: v for k, v in config.agent.to_dict().items() if k not in ("batch_size", "updates_per_step")
        },
        "obs_spec_version": OBS_SPEC_VERSION,
        "obs_shapes": {key: list(shape) for key, shape in spec.shapes.items()},
        "action_dim": config.sim.action_dim,
        "sim_configs": [config.sim.to_dict()],
    }


def check_buffer(buffer: ReplayBuffer, config: TrainerConfig, directory: Path) -> None:
    if buffer.with_priors != config.agent.uses_prior:
        raise CheckpointError(f"{directory}: replay buffer priors do not match {config.agent.algorithm}")


def load_initial_weights(agent: Agent, path: Path) -> None:
    """Every agent module from a checkpoint (a `best/` of `eat train` or a promoted version)."""
    directory = resolve_checkpoint(path, prefer_best=True)
    states, saved = load_checkpoint(directory)
    if saved.get("obs_spec_version") != OBS_SPEC_VERSION:
        raise CheckpointError(f"{directory}: observation spec v{saved.get('obs_spec_version')}")
    restore_modules(agent.modules(), states)


def recover_serving(policy_dir: Path, configured: str) -> ServingBaseline:
    """The newest promoted version in `policy_dir`, else the configured policy as version 0."""
    versions = state.promoted_versions(policy_dir)
    if not versions:
        return ServingBaseline(0, configured)
    version, directory = versions[-1]
    return ServingBaseline(version, f"{CHECKPOINT_PREFIX}{directory}")


def promotion_from_checkpoint(directory: Path, version: int) -> Promotion:
    """The Promotion of a checkpoint in policy_dir, from its config.json (an evaluation it does not
    record, e.g. a checkpoint put there by hand, reads as nan)."""
    saved = state.read_policy_config(directory)
    algorithm = saved.get("algorithm") or saved["agent"]["algorithm"]
    result = evaluation_from_json(saved.get("evaluation", {}))
    created = (directory / CONFIG_FILE).stat().st_mtime
    return Promotion(version, directory, algorithm, saved["obs_spec_version"], created, result)


def evaluation_from_json(data: dict[str, Any]) -> EvaluationResult:
    """`EvaluationResult.to_dict` read back: null numbers are nan, lists are tuples."""
    nan = math.nan
    defaults: dict[str, Any] = dict(
        candidate_utility=nan, serving_utility=nan, diff_ci95=nan, serving_version=0, serving_policy="",
        seeds=(), settings="", updates=0, promote=True,
    )  # fmt: skip
    known = {f.name for f in fields(EvaluationResult)}
    values = defaults | {key: _from_json(value) for key, value in data.items() if key in known}
    return EvaluationResult(**values)


def policy_utilities(policy: Policy, cfg: SimConfig, seeds: Sequence[int]) -> tuple[float, ...]:
    """The utility of the first episode on each seed, as `eat eval` runs a policy."""
    policy.prepare()
    policy.begin(len(seeds), seeds[0])
    return tuple(float(episode.utility) for episode in first_episodes(policy, cfg, seeds))


def judge(
    candidate: Sequence[float],
    serving: Sequence[float],
    baseline: ServingBaseline,
    updates: int,
    config: TrainerConfig,
) -> EvaluationResult:
    """Promote when the candidate's mean utility beats the serving one by more than min_improvement."""
    candidate_mean, serving_mean = estimate(candidate).mean, estimate(serving).mean
    difference = estimate([c - s for c, s in zip(candidate, serving, strict=True)])
    beats = (
        candidate_mean > (serving_mean if math.isfinite(serving_mean) else -math.inf) + config.min_improvement
    )
    return EvaluationResult(
        candidate_utility=candidate_mean,
        serving_utility=serving_mean,
        diff_ci95=difference.ci95,
        serving_version=baseline.version,
        serving_policy=baseline.policy,
        seeds=tuple(config.eval_seeds),
        settings=config.settings_text,
        updates=updates,
        promote=math.isfinite(candidate_mean) and beats,
        candidate_utilities=tuple(candidate),
        serving_utilities=tuple(serving),
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_number(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null (tuples become lists)."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, tuple):
        return [_json_number(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if value is None:
        return math.nan
    return tuple(math.nan if v is None else v for v in value) if isinstance(value, list) else value


__all__ = [
    "Candidate",
    "Counters",
    "EvaluationResult",
    "InvalidTransition",
    "OnlineTrainer",
    "Promotion",
    "ServingBaseline",
    "TrainerConfig",
    "Transition",
    "UpdateRound",
    "checkpoint_agent_config",
    "online_agent_config",
    "preset_agent_config",
]
