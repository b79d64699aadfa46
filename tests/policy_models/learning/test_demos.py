"""Demonstrations: recorded teacher episodes, their files, and the replay buffer made of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policy_models.config import paper_config
from policy_models.learning import demos
from policy_models.learning.agents import AgentConfig
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.hints import RESIDUAL_SCALE, make_hinter
from policy_models.learning.rollout import RolloutSettings
from policy_models.policies.heuristics import ReuseAwarePolicy

CFG = paper_config(4, 0.07)


@pytest.fixture(scope="module")
def recorded() -> demos.Demonstrations:
    return demos.record(CFG, [7, 8], ReuseAwarePolicy(CFG), RolloutSettings(samples=4, z=1.0), "reuse")


@pytest.mark.slow
def test_a_recording_holds_whole_episodes_with_the_base_action_beside_the_teachers(
    recorded: demos.Demonstrations,
) -> None:
    arrays = recorded.arrays
    assert arrays["done"].sum() == 2 and arrays["done"][-1] == 1.0  # two episodes, ending at the end
    assert len(recorded) == len(arrays["obs/tasks"]) == len(arrays["next_obs/globals"])
    kept = arrays["gain"] == 0
    np.testing.assert_array_equal(arrays["action"][kept], arrays["base_action"][kept])
    assert 0.0 < recorded.deviation_share < 1.0
    assert recorded.meta["seeds"] == [7, 8] and len(recorded.meta["teacher_utility"]) == 2
    # Each step's next observation is the following step's observation within an episode.
    ends = np.flatnonzero(arrays["done"])
    inner = np.setdiff1d(np.arange(len(recorded) - 1), ends)
    np.testing.assert_array_equal(arrays["next_obs/tasks"][inner], arrays["obs/tasks"][inner + 1])


def test_files_round_trip_and_are_matched_to_configs(recorded: demos.Demonstrations, tmp_path: Path) -> None:
    demos.save(recorded, tmp_path)
    (loaded,) = demos.load_directory(tmp_path)
    assert loaded.config == CFG and loaded.meta == recorded.meta
    for key, value in recorded.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    assert demos.for_configs([loaded], (CFG,)) == [loaded]
    with pytest.raises(ValueError, match="no demonstrations for"):
        demos.for_configs([loaded], (paper_config(4, 0.05),))
    with pytest.raises(ValueError, match="no demonstrations in"):
        demos.load_directory(tmp_path / "empty")


def test_the_buffer_holds_residual_corrections_and_n_step_returns(recorded: demos.Demonstrations) -> None:
    hinter = make_hinter("reuse", CFG)
    residual = AgentConfig(hint="reuse", residual=True, n_step=1)
    buffer = demos.replay_buffer(recorded, hinter, residual, seed=0)
    assert len(buffer) == len(recorded)
    sample = buffer.sample(len(recorded))
    hint, action = sample.obs["hint"], sample.action
    rebuilt = np.clip(hint + RESIDUAL_SCALE * action, -1, 1)
    # Every stored correction turns the hint into the teacher's action (rows are a permutation).
    teacher = {tuple(np.round(a, 5)) for a in recorded.arrays["action"]}
    assert all(tuple(np.round(a, 5)) in teacher for a in rebuilt)
    three = demos.replay_buffer(recorded, hinter, AgentConfig(hint="reuse", n_step=3, gamma=0.5), seed=0)
    assert len(three) == len(recorded) - 2  # the last n - 1 steps have no full window
    first = three._reward[0]  # the first episode's first 3-step return
    r = recorded.arrays["reward"]
    assert first == pytest.approx(r[0] + 0.5 * r[1] + 0.25 * r[2])


def test_deviations_can_count_several_times(recorded: demos.Demonstrations) -> None:
    agent = AgentConfig(hint="reuse", residual=True, n_step=1)
    hinter = make_hinter("reuse", CFG)
    deviations = int((recorded.arrays["gain"] > 0).sum())
    assert deviations > 0
    once = demos.replay_buffer(recorded, hinter, agent, seed=0)
    thrice = demos.replay_buffer(recorded, hinter, agent, seed=0, deviation_copies=3)
    assert len(thrice) == len(once) + 2 * deviations

    def corrections(buffer: ReplayBuffer) -> int:  # rows whose action corrects the hint
        return int((np.abs(buffer._action[: len(buffer)]).max(1) > 0).sum())

    assert corrections(once) > 0 and corrections(thrice) == 3 * corrections(once)


@pytest.mark.slow
def test_pretraining_on_demonstrations_learns_them_and_validates_as_it_goes(
    recorded: demos.Demonstrations, tmp_path: Path
) -> None:
    import dataclasses
    import json

    import torch

    from policy_models.checkpoints import load_checkpoint, restore_modules
    from policy_models.learning.agents import build_agent
    from policy_models.learning.imitation import actor_imitation_loss
    from policy_models.learning.sac import TensorBatch
    from policy_models.learning.train import train
    from policy_models.obs import ObservationSpec
    from tests.policy_models.learning.test_train import TINY, metric_values, tiny_settings

    demos.save(recorded, tmp_path / "demos")
    agent = dataclasses.replace(TINY, hint="reuse", residual=True, batch_size=32)
    settings = tiny_settings(
        tmp_path / "run",
        sim=CFG,
        agent=agent,
        demos=tmp_path / "demos",
        pretrain_updates=90,
        pretrain_lr=3e-3,
        pretrain_eval_every=30,
        warmup_steps=0,
        total_steps=16,
    )
    result = train(settings)
    saved = json.loads((result.final_checkpoint / "config.json").read_text())
    assert saved["training"]["demos"] == str(tmp_path / "demos") and saved["progress"]["pretrained"]
    assert len(metric_values(result.csv_path, "eval/utility")) >= 3  # after 30, 60 and 90 updates

    buffer = demos.replay_buffer(recorded, make_hinter("reuse", CFG), agent, 0)
    batch = TensorBatch.from_numpy(buffer.sample(len(buffer)))

    def loss(trained: bool) -> float:
        net = build_agent(agent, ObservationSpec.from_config(CFG), seed=settings.seed)
        if trained:
            restore_modules(net.modules(), load_checkpoint(result.final_checkpoint)[0])
        with torch.no_grad():
            state = net.encoder(batch.obs)
            generator = torch.Generator().manual_seed(0)
            per_sample = actor_imitation_loss(net.actor, state, batch.action, batch.action, 0.1, generator)
            return per_sample.mean().item()

    assert loss(trained=True) < 0.8 * loss(trained=False)  # 0.11 against 2.93 at this commit


def test_demonstrations_need_pretraining_updates(tmp_path: Path) -> None:
    from tests.policy_models.learning.test_train import tiny_settings

    with pytest.raises(ValueError, match="pretrain_updates"):
        tiny_settings(tmp_path, demos=tmp_path, pretrain_updates=0)
