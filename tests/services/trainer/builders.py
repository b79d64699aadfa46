"""Synthetic live transitions and a tiny trainer config, shared by the trainer tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eat.v1 import learning_pb2
from policy_models.learning.agents import AgentConfig
from policy_models.live import ServerInfo, Snapshot, TaskInfo, live_config
from services.common.convert import snapshot_to_proto
from services.trainer.core import TrainerConfig, Transition, online_agent_config

MODELS = ("sd-v1-4", "sdxl")
NODES = 4
SIM = live_config(NODES, MODELS, models_per_server=2)
# The promotion setting with short episodes (4 tasks, a 2-minute limit) so an evaluation takes well
# under a second even for an agent that never starts a task.
EVAL_SIM = dataclasses.replace(
    live_config(NODES, MODELS, models_per_server=2, arrival_rate=0.05),
    tasks_per_episode=4,
    initial_tasks=2,
    time_limit_s=120.0,
)
TINY_AGENT = online_agent_config(
    AgentConfig(hidden=16, score_hidden=16, d_model=16, attention_ff=32, diffusion_steps=3, tau=0.1),
    batch_size=16,
    buffer_capacity=512,
)


def tiny_config(tmp_path: Path, **changes: object) -> TrainerConfig:
    values: dict[str, object] = dict(
        sim=SIM,
        eval_sim=EVAL_SIM,
        models=MODELS,
        agent=TINY_AGENT,
        policy_dir=tmp_path / "policies",
        warmup_transitions=8,
        updates_per_transition=1.0,
        evaluate_every_updates=4,
        eval_seeds=(500, 501),
        seed=7,
    )
    values.update(changes)
    return TrainerConfig(**values)  # type: ignore[arg-type]


def random_snapshot(rng: np.random.Generator, servers: int = 3, tasks: int = 3) -> Snapshot:
    """A few servers (fewer than the policy's 4: the observation pads them) and a few queued tasks."""
    server_infos = tuple(
        ServerInfo(
            server_id=f"s{i}",
            idle=bool(rng.random() < 0.6),
            remaining_s=float(rng.uniform(0.0, 20.0)),
            resident_models=tuple(m for m in MODELS if rng.random() < 0.5),
            speed=float(rng.choice([0.8, 1.0, 1.25])),
        )
        for i in range(servers)
    )
    queue = tuple(
        TaskInfo(
            task_id=f"t{i}",
            waiting_s=float(rng.uniform(0.0, 30.0)),
            patches=int(rng.choice([1, 2])),
            model=str(rng.choice(MODELS)),
        )
        for i in range(tasks)
    )
    return Snapshot(now_s=float(rng.uniform(0, 100)), servers=server_infos, queue=queue, total_queued=tasks)


def random_transition(
    rng: np.random.Generator, episode_id: str = "ep", step_index: int = 0, **changes: object
) -> Transition:
    values: dict[str, object] = dict(
        episode_id=episode_id,
        step_index=step_index,
        observation=random_snapshot(rng),
        action=tuple(float(v) for v in rng.uniform(-1.0, 1.0, SIM.action_dim)),
        reward=float(rng.uniform(0.0, 20.0)),
        next_observation=random_snapshot(rng),
    )
    values.update(changes)
    return Transition(**values)  # type: ignore[arg-type]


def experience(transition: Transition) -> learning_pb2.Experience:
    """The Experience message of a transition, as the aggregator would publish it."""
    return learning_pb2.Experience(
        episode_id=transition.episode_id,
        step_index=transition.step_index,
        observation=snapshot_to_proto(transition.observation),
        action=transition.action,
        reward=transition.reward,
        next_observation=snapshot_to_proto(transition.next_observation),
        done=transition.done,
        truncated=transition.truncated,
        obs_spec_version=transition.obs_spec_version,
        source="sim:test",
    )
