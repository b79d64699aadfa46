"""Demonstrations: episodes played by the rollout teacher, kept as transitions an actor learns from.

`record` plays whole episodes on the single simulator, the teacher (`learning.rollout.decide`) choosing
every action, and keeps each step's (obs, action, reward, next obs, done) with the base policy's
action beside the teacher's and the estimated gain. `save`/`load` use safetensors + JSON (never
pickle); one directory holds one file pair per cluster config. `replay_buffer` turns a config's
demonstrations into the replay buffer `eat train --demos` pretrains on: n-step returns as in training,
hints added for hinted agents, and actions as the actor outputs them (for a residual agent, the
correction to the hint).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from policy_models.config import SimConfig
from policy_models.learning.agents import AgentConfig
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.hints import from_env_action, observation_shapes, with_hint
from policy_models.learning.rollout import RolloutSettings, decide
from policy_models.obs import ObservationSpec, batch_of_one
from policy_models.policies import Policy
from policy_models.sim.env import ClusterEnv

DEMOS_FORMAT_VERSION = 1
OBS_KEYS = ("servers", "tasks", "globals")


@dataclass(frozen=True)
class Demonstrations:
    """The teacher's steps on one cluster config, episode after episode (arrays have one row a step)."""

    config: SimConfig
    arrays: dict[str, np.ndarray]  # obs/<key>, next_obs/<key>, action, base_action, reward, done, gain
    meta: dict[str, Any]  # seeds, settings, base policy, per-episode utilities, wall time

    def __len__(self) -> int:
        return len(self.arrays["action"])

    @property
    def deviation_share(self) -> float:
        """Share of steps where the teacher left the base policy's action."""
        return float((self.arrays["gain"] > 0).mean()) if len(self) else 0.0


def record(
    config: SimConfig, seeds: list[int], base: Policy, settings: RolloutSettings, base_name: str
) -> Demonstrations:
    """One episode per seed, every action the teacher's; its generator is seeded by the episode's seed."""
    steps: list[dict[str, np.ndarray]] = []
    teacher_utility, base_utility = [], []
    start = time.perf_counter()
    for seed in seeds:
        episode, utility = teacher_episode(config, seed, base, settings, np.random.default_rng(seed))
        steps.extend(episode)
        teacher_utility.append(utility)
        base_utility.append(base_episode_utility(config, seed, base))
    arrays = {key: np.stack([step[key] for step in steps]) for key in steps[0]}
    meta = {
        "seeds": list(seeds),
        "rollout": settings.to_dict(),
        "base_policy": base_name,
        "teacher_utility": teacher_utility,
        "base_utility": base_utility,
        "wall_s": time.perf_counter() - start,
    }
    return Demonstrations(config, arrays, meta)


def teacher_episode(
    config: SimConfig, seed: int, base: Policy, settings: RolloutSettings, rng: np.random.Generator
) -> tuple[list[dict[str, np.ndarray]], float]:
    """The teacher's steps over one episode, and the episode's utility."""
    env = ClusterEnv(config)
    obs, _ = env.reset(seed=seed)
    steps, done = [], False
    while not done:
        decision = decide(env, obs, base, settings, rng)
        next_obs, reward, terminated, truncated, _ = env.step(decision.action)
        done = terminated or truncated
        step = {f"obs/{k}": obs[k] for k in OBS_KEYS} | {f"next_obs/{k}": next_obs[k] for k in OBS_KEYS}
        step |= {
            "action": decision.action.astype(np.float32),
            "base_action": decision.base_action.astype(np.float32),
            "reward": np.float32(reward),
            "done": np.float32(done),
            "gain": np.float32(decision.gain),
        }
        steps.append(step)
        obs = next_obs
    return steps, env.episode_stats().utility


def base_episode_utility(config: SimConfig, seed: int, base: Policy) -> float:
    env = ClusterEnv(config)
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(base.act(batch_of_one(obs))[0])
        done = terminated or truncated
    return env.episode_stats().utility


# ----- files ---------------------------------------------------------------------------------------------
def config_key(config: SimConfig) -> str:
    """The whole config as canonical JSON: what files are matched on and named by."""
    return json.dumps(config.to_dict(), sort_keys=True)


def file_stem(config: SimConfig) -> str:
    """A readable name for a config's files, unique by a hash of the whole config."""
    digest = hashlib.sha256(config_key(config).encode()).hexdigest()[:10]
    return f"{config.mode}-n{config.n_servers}-rate{config.arrival_rate:g}-{digest}"


def save(demos: Demonstrations, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / file_stem(demos.config)
    save_file({k: np.ascontiguousarray(v) for k, v in demos.arrays.items()}, f"{stem}.safetensors")
    record = {"format": DEMOS_FORMAT_VERSION, "config": demos.config.to_dict(), **demos.meta}
    Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    return stem


def load_directory(directory: Path) -> list[Demonstrations]:
    """Every config's demonstrations in `directory` (a directory without any is an error)."""
    found = []
    for meta_path in sorted(directory.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.pop("format", None) != DEMOS_FORMAT_VERSION:
            raise ValueError(f"{meta_path}: not demonstrations of format {DEMOS_FORMAT_VERSION}")
        config = SimConfig.from_dict(meta.pop("config"))
        arrays = load_file(str(meta_path.with_suffix(".safetensors")))
        found.append(Demonstrations(config, arrays, meta))
    if not found:
        raise ValueError(f"no demonstrations in {directory} (write them with `eat label`)")
    return found


def for_configs(found: list[Demonstrations], configs: tuple[SimConfig, ...]) -> list[Demonstrations]:
    """The demonstrations of each training config, in order; an error names a config without any."""
    by_config = {config_key(d.config): d for d in found}
    chosen = []
    for config in configs:
        demos = by_config.get(config_key(config))
        if demos is None:
            raise ValueError(f"no demonstrations for the cluster config {file_stem(config)}")
        chosen.append(demos)
    return chosen


# ----- into a replay buffer ------------------------------------------------------------------------------
def replay_buffer(
    demos: Demonstrations, hinter: Policy | None, agent: AgentConfig, seed: int, deviation_copies: int = 1
) -> ReplayBuffer:
    """The demonstrations as a replay buffer of n-step transitions, as the trainer stores its own for
    `agent` (its n-step return, its residual output and dead zone).

    deviation_copies: steps where the teacher left the base policy go in this many times. They are a
    fifth of the steps and carry everything the base policy does not already know."""
    from policy_models.learning.train import NStepWindow  # the trainer's own n-step rule

    arrays = demos.arrays
    obs = with_hint({k: arrays[f"obs/{k}"] for k in OBS_KEYS}, hinter)
    next_obs = with_hint({k: arrays[f"next_obs/{k}"] for k in OBS_KEYS}, hinter)
    actions = from_env_action(arrays["action"], obs, agent.residual, agent.residual_deadzone)
    shapes = observation_shapes(ObservationSpec.from_config(demos.config), hinted=hinter is not None)
    deviations = arrays["gain"] > 0
    rows = len(demos) + (deviation_copies - 1) * int(deviations.sum())
    buffer = ReplayBuffer(shapes, demos.config.action_dim, max(rows, 1), seed=seed)
    window = NStepWindow(agent.n_step, agent.gamma)
    for t in range(len(demos)):
        row = slice(t, t + 1)
        transition = window.push(
            {k: v[row] for k, v in obs.items()},
            actions[row],
            arrays["reward"][row],
            {k: v[row] for k, v in next_obs.items()},
            arrays["done"][row],
        )
        if transition is not None:  # the window hands out step t - n + 1's transition
            copies = deviation_copies if deviations[t - agent.n_step + 1] else 1
            for _ in range(copies):
                buffer.add(*transition[:5])
    return buffer
