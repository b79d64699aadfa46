from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policy_models.config import paper_config
from policy_models.learning.buffer import ReplayBuffer
from policy_models.obs import ObservationSpec
from policy_models.sim.batched import BatchedClusterSim


def collect(buffer: ReplayBuffer, steps: int, seed: int = 0) -> None:
    cfg = paper_config(4, 0.05)
    sim = BatchedClusterSim(cfg, list(range(8)))
    obs = sim.reset()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        action = rng.uniform(-1, 1, (8, cfg.action_dim))
        result = sim.step(action)
        done = (result.terminated | result.truncated).astype(np.float32)
        buffer.add(obs, action, result.reward, result.obs, done)
        obs = result.obs


def make_buffer(capacity: int) -> ReplayBuffer:
    cfg = paper_config(4, 0.05)
    return ReplayBuffer(ObservationSpec.from_config(cfg).shapes, cfg.action_dim, capacity, seed=1)


def test_ring_keeps_the_newest_transitions() -> None:
    buffer = make_buffer(capacity=20)
    rewards = []
    for step in range(5):
        obs = {k: np.full((8, *s), step, dtype=np.float32) for k, s in buffer.obs_shapes.items()}
        reward = np.arange(8, dtype=np.float32) + 10 * step
        rewards.extend(reward.tolist())
        buffer.add(obs, np.zeros((8, buffer.action_dim)), reward, obs, np.zeros(8))
    assert len(buffer) == 20
    assert sorted(buffer._reward.tolist()) == sorted(rewards[-20:])


def test_sample_returns_consistent_rows() -> None:
    buffer = make_buffer(capacity=1000)
    collect(buffer, steps=30)
    batch = buffer.sample(64)
    assert batch.action.shape == (64, buffer.action_dim)
    assert batch.obs["tasks"].shape == (64, *buffer.obs_shapes["tasks"])
    assert set(np.unique(batch.done)) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        make_buffer(10).sample(1)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    buffer = make_buffer(capacity=100)
    collect(buffer, steps=20)  # 160 rows: the ring has wrapped
    buffer.save(tmp_path)
    loaded = ReplayBuffer.load(tmp_path)
    assert len(loaded) == len(buffer) == 100
    order = buffer._chronological()
    np.testing.assert_array_equal(loaded._reward[:100], buffer._reward[order])
    np.testing.assert_array_equal(loaded._obs["servers"][:100], buffer._obs["servers"][order])
    assert not any(p.suffix in {".pkl", ".pt"} for p in tmp_path.iterdir())
