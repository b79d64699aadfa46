"""Shared pieces of the policy server tests: settings for a small live cluster, snapshots, a tiny EAT
checkpoint built from seeded random weights, and real servers on free ports."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from policy_models.checkpoints import save_checkpoint
from policy_models.learning.agents import AgentConfig, build_agent
from policy_models.learning.train import Progress, TrainSettings, checkpoint_config
from policy_models.live import ServerInfo, Snapshot, TaskInfo
from policy_models.obs import ObservationSpec
from services.policy_server.core import scheduler_config
from services.policy_server.server import RunningServer, start_in_thread
from services.policy_server.settings import PolicySettings

torch.set_num_threads(1)

MODELS = ("sd-v1-4", "sd-v2-1")
# Untrained and small: the tests check serving, not scheduling quality.
TINY_AGENT = AgentConfig(hidden=32, score_hidden=16, d_model=16, attention_ff=32, diffusion_steps=3)


def settings(**overrides: object) -> PolicySettings:
    """A 4-server, 2-model cluster on a free port of 127.0.0.1, plaintext under the development switch
    (test_security.py serves TLS with a token); no hot-swap listener unless asked for (the updates
    queue is shared with every other server on this broker)."""
    base: dict[str, object] = dict(
        grpc_port=0, grpc_host="127.0.0.1", nodes=4, models=MODELS, hot_swap=False, log_format="console"
    )
    base["policy_insecure"] = True
    return PolicySettings.from_env(env={}, **{**base, **overrides})


def server_info(n: int, idle: bool = True, models: tuple[str, ...] = ("sd-v1-4",)) -> ServerInfo:
    return ServerInfo(f"edge-{n}", idle, remaining_s=0.0 if idle else 7.5, resident_models=models)


def task(task_id: str, patches: int = 1, model: str = "sd-v1-4", waiting_s: float = 3.0) -> TaskInfo:
    return TaskInfo(task_id, waiting_s, patches, model)


def startable_snapshot() -> Snapshot:
    """Two idle servers holding sd-v1-4, two busy ones; three queued tasks, two of which fit now."""
    servers = (server_info(0), server_info(1), server_info(2, idle=False), server_info(3, idle=False))
    queue = (task("t-a", 1, waiting_s=9.0), task("t-b", 2, "sd-v2-1", 4.0), task("t-c", 4, waiting_s=1.0))
    return Snapshot(now_s=42.0, servers=servers, queue=queue, total_queued=3, arrived=5, launched=2)


def all_busy_snapshot() -> Snapshot:
    servers = tuple(server_info(n, idle=False) for n in range(4))
    return Snapshot(now_s=50.0, servers=servers, queue=(task("t-a"),), total_queued=1, arrived=3, launched=2)


def save_tiny_checkpoint(
    directory: Path, algorithm: str = "eat", seed: int = 0, **agent_changes: object
) -> Path:
    """An untrained agent for `settings()`'s cluster, written as a training run writes its best."""
    cfg = scheduler_config(settings())
    agent_config = dataclasses.replace(TINY_AGENT, algorithm=algorithm, **agent_changes)
    train = TrainSettings(sim=cfg, agent=agent_config, out_dir=directory, seed=seed)
    agent = build_agent(agent_config, ObservationSpec.from_config(cfg), seed=seed)
    save_checkpoint(directory, agent.modules(), checkpoint_config(train, Progress()))
    return directory


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("eat-tiny"))


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """start_server(**settings overrides) -> a running server, stopped after the test."""
    running: list[RunningServer] = []

    def start(**overrides: object) -> RunningServer:
        server = start_in_thread(settings(**overrides))
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()
