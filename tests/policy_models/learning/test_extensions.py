"""The CPU profile's SAC extensions: n-step returns, a learned temperature, reward scaling, presets
and the wall-clock limit."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_models.checkpoints import load_checkpoint
from policy_models.learning.agents import AgentConfig, build_agent
from policy_models.learning.sac import build_optimizers, sac_update, td_target
from policy_models.learning.train import NStepWindow, TrainSettings, train
from policy_models.obs import ObservationSpec
from services.cli import main
from tests.policy_models.learning.test_sac import CFG, SMALL, fixed_batch
from tests.policy_models.learning.test_train import tiny_settings

torch.set_num_threads(1)


def _obs(values: list[float]) -> dict[str, np.ndarray]:
    return {"x": np.asarray(values, dtype=np.float32)[:, None]}


def _push(window: NStepWindow, t: int, rewards: list[float], dones: list[float]) -> tuple | None:
    n_envs = len(rewards)
    action = np.full((n_envs, 1), float(t), dtype=np.float32)
    return window.push(
        _obs([t] * n_envs),
        action,
        np.asarray(rewards, dtype=np.float32),
        _obs([t + 1] * n_envs),
        np.asarray(dones, dtype=np.float32),
    )


def test_one_step_window_passes_transitions_through() -> None:
    window = NStepWindow(1, 0.9)
    out = _push(window, 0, [1.0, 2.0], [0.0, 1.0])
    assert out is not None
    np.testing.assert_array_equal(out[2], [1.0, 2.0])
    np.testing.assert_array_equal(out[4], [0.0, 1.0])


def test_n_step_returns_discount_and_stop_at_episode_ends() -> None:
    gamma = 0.5
    window = NStepWindow(3, gamma)
    # env 0 never ends; env 1 ends at t = 1 (its reward 20 is the last of that episode).
    assert _push(window, 0, [1.0, 10.0], [0.0, 0.0]) is None
    assert _push(window, 1, [2.0, 20.0], [0.0, 1.0]) is None
    out = _push(window, 2, [4.0, 40.0], [0.0, 0.0])
    assert out is not None
    obs, action, ret, next_obs, done, _, _ = out
    assert obs["x"][0, 0] == 0.0 and action[0, 0] == 0.0 and next_obs["x"][0, 0] == 3.0
    np.testing.assert_allclose(ret, [1 + gamma * 2 + gamma**2 * 4, 10 + gamma * 20])
    np.testing.assert_array_equal(done, [0.0, 1.0])
    # The step at t = 1 ended env 1 too; the step at t = 2 starts env 1's next episode.
    out = _push(window, 3, [8.0, 80.0], [0.0, 0.0])
    assert out is not None
    np.testing.assert_allclose(out[2], [2 + gamma * 4 + gamma**2 * 8, 20])
    np.testing.assert_array_equal(out[4], [0.0, 1.0])
    out = _push(window, 4, [16.0, 160.0], [0.0, 0.0])
    assert out is not None
    np.testing.assert_allclose(out[2], [4 + gamma * 8 + gamma**2 * 16, 40 + gamma * 80 + gamma**2 * 160])
    np.testing.assert_array_equal(out[4], [0.0, 0.0])


def test_n_step_td_target_discounts_by_gamma_to_the_n_and_scales_rewards() -> None:
    batch = fixed_batch()
    spec = ObservationSpec.from_config(CFG)
    one = build_agent(SMALL, spec, seed=0)
    three = build_agent(dataclasses.replace(SMALL, n_step=3, reward_scale=2.0), spec, seed=0)
    y1 = td_target(one, batch, torch.Generator().manual_seed(0))
    y3 = td_target(three, batch, torch.Generator().manual_seed(0))
    bootstrap = (y1 - batch.reward) / SMALL.gamma
    expected = 2.0 * batch.reward + SMALL.gamma**3 * bootstrap
    torch.testing.assert_close(y3, expected, rtol=1e-5, atol=1e-5)


def test_learned_alpha_moves_towards_its_target_entropy() -> None:
    spec = ObservationSpec.from_config(CFG)
    batch = fixed_batch()
    for target, direction in ((-20.0, -1), (5.0, +1)):
        config = dataclasses.replace(SMALL, learn_alpha=True, target_entropy_per_dim=target, alpha_lr=0.05)
        agent = build_agent(config, spec, seed=0)
        optimizers = build_optimizers(agent)
        assert agent.temperature is not None and optimizers.alpha is not None
        assert math.isclose(agent.alpha, SMALL.alpha, rel_tol=1e-6)
        stats = [sac_update(agent, optimizers, batch, torch.Generator().manual_seed(i)) for i in range(5)]
        assert stats[0].alpha == pytest.approx(SMALL.alpha)
        # Entropy above a very low target: alpha falls; below a very high one: it rises.
        assert direction * (agent.alpha - SMALL.alpha) > 0


def test_fixed_alpha_agents_have_no_temperature() -> None:
    agent = build_agent(SMALL, ObservationSpec.from_config(CFG), seed=0)
    assert agent.temperature is None and "temperature" not in agent.modules()
    assert build_optimizers(agent).alpha is None and agent.alpha == SMALL.alpha


def test_paper_preset_is_the_default_and_leaves_old_configs_unchanged() -> None:
    assert AgentConfig.paper() == AgentConfig()
    assert "n_step" not in AgentConfig().to_dict() and "learn_alpha" not in AgentConfig().to_dict()
    fast = AgentConfig.cpu_fast()
    assert fast.to_dict()["n_step"] == fast.n_step and AgentConfig.from_dict(fast.to_dict()) == fast


@pytest.mark.slow
def test_learned_alpha_and_n_step_train_checkpoint_and_resume(tmp_path: Path) -> None:
    agent = dataclasses.replace(tiny_settings(tmp_path).agent, learn_alpha=True, n_step=3)
    result = train(tiny_settings(tmp_path / "a", agent=agent, total_steps=240, checkpoint_every=160))
    states, saved = load_checkpoint(result.final_checkpoint)
    assert "temperature" in states and saved["agent"]["n_step"] == 3
    index = json.loads((result.final_checkpoint / "trainer_state.json").read_text())
    assert set(index["optimizers"]) == {"actor", "critic", "alpha"}
    resumed = train(tiny_settings(tmp_path / "b", agent=agent, total_steps=320, resume_from=result.out_dir))
    assert resumed.start_step == 240 and resumed.env_steps == 320
    assert math.isfinite(resumed.final_eval_utility)


@pytest.mark.slow
def test_time_limit_stops_training_early(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, total_steps=10**9, time_limit_s=1.0)
    result = train(settings)
    assert result.env_steps < 10**9 and result.final_checkpoint.is_dir()
    with pytest.raises(ValueError, match="time_limit_s"):
        TrainSettings(sim=CFG, time_limit_s=0.0)


def test_train_command_cpu_fast_preset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fast"
    argv = ["train", "--algo", "eat", "--nodes", "4", "--rate", "0.05", "--envs", "8", "--preset", "cpu-fast"]
    argv += ["--steps", "96", "--warmup", "32", "--batch-size", "32", "--eval-every", "0", "--minutes", "5"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "best" / "config.json").read_text())
    expected = dataclasses.replace(AgentConfig.cpu_fast(), batch_size=32).to_dict()
    assert saved["agent"] == json.loads(json.dumps(expected))
    assert saved["training"]["time_limit_s"] == 300.0
    assert "96 env steps" in capsys.readouterr().out
