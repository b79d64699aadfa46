"""Hinted agents: the heuristic's action joins the observation, the encoders read it, the buffer and
checkpoints keep it, a served policy recomputes it, and it makes imitation easy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_models.learning.agents import RESIDUAL_INITIAL_STD, AgentConfig, build_agent, step_checkpoints
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.hints import (
    from_env_action,
    make_hinter,
    observation_shapes,
    to_env_action,
    with_hint,
)
from policy_models.learning.train import train
from policy_models.nets import TwinCritic, as_tensors
from policy_models.nets.encoders import HINT_KEY, residual_to_action
from policy_models.obs import ObservationSpec
from policy_models.policies import make_policy
from policy_models.policies.learned import LearnedPolicy
from policy_models.sim.batched import BatchedClusterSim
from services.cli import main
from tests.policy_models.learning.test_imitation import agreement
from tests.policy_models.learning.test_train import CFG, TINY, metric_values, tiny_settings

torch.set_num_threads(1)


def observations(seeds: list[int], steps: int = 12) -> dict[str, np.ndarray]:
    """Observations a few decisions into episodes run by the reuse heuristic."""
    sim, reuse = BatchedClusterSim(CFG, seeds), make_policy("reuse", CFG)
    obs = sim.reset()
    for _ in range(steps):
        obs = sim.step(reuse.act(obs)).obs
    return obs


def test_the_hint_is_the_heuristics_action_on_the_same_observation() -> None:
    obs = observations([1, 2, 3])
    hinted = with_hint(obs, make_hinter("reuse", CFG))
    np.testing.assert_allclose(hinted[HINT_KEY], make_policy("reuse", CFG).act(obs), atol=1e-6)
    assert hinted[HINT_KEY].dtype == np.float32 and hinted[HINT_KEY].shape == (3, CFG.action_dim)
    for key in obs:
        assert hinted[key] is obs[key]
    assert with_hint(obs, None) is obs


def test_only_memoryless_heuristics_hint() -> None:
    for name in ("random", "genetic", "shipped:eat"):
        with pytest.raises(ValueError, match="memoryless"):
            make_hinter(name, CFG)
    with pytest.raises(ValueError, match="hint"):
        AgentConfig(hint="random")


def test_an_unhinted_config_is_written_as_before() -> None:
    assert "hint" not in AgentConfig().to_dict()
    hinted = AgentConfig(hint="reuse")
    assert hinted.to_dict()["hint"] == "reuse"
    assert AgentConfig.from_dict(hinted.to_dict()) == hinted


@pytest.mark.parametrize("algorithm", ["eat", "eat-da"])
def test_a_hinted_encoder_reads_the_hint(algorithm: str) -> None:
    config = dataclasses.replace(TINY, algorithm=algorithm, hint="reuse")
    agent = build_agent(config, ObservationSpec.from_config(CFG), seed=0)
    obs = with_hint(observations([4, 5]), make_hinter("reuse", CFG))
    changed = {**obs, HINT_KEY: -obs[HINT_KEY]}
    with torch.no_grad():
        pooled, *_ = agent.encoder(as_tensors(obs))
        pooled_changed, *_ = agent.encoder(as_tensors(changed))
    assert not torch.allclose(pooled, pooled_changed)
    with pytest.raises(KeyError):
        agent.encoder(as_tensors({key: obs[key] for key in ("servers", "tasks", "globals")}))


def test_the_buffer_keeps_the_hint_through_save_and_load(tmp_path: Path) -> None:
    shapes = observation_shapes(ObservationSpec.from_config(CFG), hinted=True)
    assert shapes[HINT_KEY] == (CFG.action_dim,)
    obs = with_hint(observations([6, 7]), make_hinter("reuse", CFG))
    buffer = ReplayBuffer(shapes, CFG.action_dim, capacity=8)
    buffer.add(obs, obs[HINT_KEY], np.ones(2, np.float32), obs, np.zeros(2, np.float32))
    buffer.save(tmp_path)
    loaded = ReplayBuffer.load(tmp_path)
    sample = loaded.sample(16)
    assert set(sample.obs) == set(sample.next_obs) == {"servers", "tasks", "globals", HINT_KEY}
    # Each row was stored with its own hint as its action: rows and hints stay together.
    np.testing.assert_array_equal(sample.obs[HINT_KEY], sample.action)
    assert {tuple(row) for row in sample.action} == {tuple(row) for row in obs[HINT_KEY]}


@pytest.mark.slow
def test_a_hinted_checkpoint_serves_with_its_hint_traced_as_eager(tmp_path: Path) -> None:
    out = tmp_path / "hinted"
    argv = ["train", "--algo", "eat", "--nodes", "4", "--rate", "0.05", "--envs", "8", "--seed", "1"]
    argv += ["--warmup", "32", "--batch-size", "32", "--eval-every", "0", "--out", str(out), "--no-progress"]
    assert (
        main([*argv, "--steps", "64", "--hint", "reuse", "--teacher", "reuse", "--pretrain-updates", "4"])
        == 0
    )
    saved = json.loads((step_checkpoints(out)[-1] / "config.json").read_text())
    assert saved["agent"]["hint"] == "reuse"
    # Resumed without --hint: the checkpoint's agent, hint included.
    assert main(["train", "--resume", str(out), *argv[7:], "--steps", "96"]) == 0
    assert json.loads((step_checkpoints(out)[-1] / "config.json").read_text())["agent"]["hint"] == "reuse"

    traced = LearnedPolicy.from_checkpoint(step_checkpoints(out)[-1], CFG)
    eager = LearnedPolicy.from_checkpoint(step_checkpoints(out)[-1], CFG, compiled=False)
    assert traced.hinter is not None and traced.hinter.name == "reuse"
    obs = observations([8, 9, 10])
    np.testing.assert_allclose(traced.act(obs), eager.act(obs), atol=1e-5)
    # The served decision reads the hint: a different hinter gives different actions.
    eager.hinter = make_hinter("fifo", CFG)
    assert not np.allclose(eager.act(obs), traced.act(obs), atol=1e-3)


def test_ppo_takes_no_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--algo", "ppo", "--nodes", "4", "--hint", "reuse", "--out", str(tmp_path)])
    assert "--hint and --residual are for the SAC family" in capsys.readouterr().err


@pytest.mark.slow
def test_a_hint_makes_imitation_of_its_heuristic_easy(tmp_path: Path) -> None:
    """The same short pretraining as test_imitation's, with and without the hint: the hinted actor
    copies the teacher's launch-or-wait call and its task far more often. Measured at this commit:
    execute 0.867 -> 1.000, task 0.633 -> 1.000 (the step count, read from the pooled state, is not
    copied yet after so few updates: error 9.9 -> 14.0 steps)."""
    agent = dataclasses.replace(TINY, hidden=64, score_hidden=32, d_model=32, attention_ff=64, actor_lr=1e-3)
    common = dict(teacher="reuse", pretrain_updates=300, warmup_steps=1024, total_steps=1024, n_envs=16)
    found = {}
    for hint in (None, "reuse"):
        settings = tiny_settings(tmp_path / str(hint), agent=dataclasses.replace(agent, hint=hint), **common)
        result = train(settings)
        found[hint] = agreement(LearnedPolicy.from_checkpoint(result.final_checkpoint, CFG), range(900, 964))
    plain, hinted = found[None], found["reuse"]
    assert hinted.execute > 0.95 and hinted.task > 0.9, found
    assert hinted.execute > plain.execute and hinted.task > plain.task, found


# ----- residual agents ---------------------------------------------------------------------------------
def test_a_zero_residual_is_the_hint_and_the_inverse_recovers_an_output() -> None:
    obs = with_hint(observations([11, 12]), make_hinter("reuse", CFG))
    zero = np.zeros_like(obs[HINT_KEY])
    np.testing.assert_array_equal(to_env_action(zero, obs, residual=True), obs[HINT_KEY])
    output = np.random.default_rng(0).uniform(-1, 1, zero.shape).astype(np.float32)
    action = to_env_action(output, obs, residual=True)
    assert np.all(np.abs(action) <= 1.0)
    # Where nothing was clipped, the inverse gives the output back.
    unclipped = np.abs(obs[HINT_KEY] + 2 * output) < 1.0
    recovered = from_env_action(action, obs, residual=True)
    np.testing.assert_allclose(recovered[unclipped], output[unclipped], atol=1e-6)
    # An output of -1 on execute turns the hint's launch into a wait, +1 a wait into a launch.
    launch = obs[HINT_KEY][:, 0] > 0
    flipped = zero.copy()
    flipped[:, 0] = np.where(launch, -1.0, 1.0)
    assert np.all((to_env_action(flipped, obs, residual=True)[:, 0] > 0) == ~launch)
    assert to_env_action(output, obs, residual=False) is output


def test_a_dead_zone_keeps_the_hint_under_small_corrections_and_the_inverse_clears_it() -> None:
    obs = with_hint(observations([13, 14]), make_hinter("reuse", CFG))
    hint = obs[HINT_KEY]
    small = np.random.default_rng(2).uniform(-0.1, 0.1, hint.shape).astype(np.float32)
    np.testing.assert_array_equal(to_env_action(small, obs, residual=True, deadzone=0.1), hint)
    # A correction past the zone moves the action by 2 x (|output| - 0.1), and the inverse gives the
    # output back wherever nothing was clipped; where the action is the hint's, the inverse is 0.
    output = np.random.default_rng(3).uniform(-1, 1, hint.shape).astype(np.float32)
    action = to_env_action(output, obs, residual=True, deadzone=0.1)
    moved = np.sign(output) * np.maximum(np.abs(output) - 0.1, 0.0)
    unclipped = np.abs(hint + 2 * moved) < 1.0
    np.testing.assert_allclose(action[unclipped], (hint + 2 * moved)[unclipped], atol=1e-6)
    recovered = from_env_action(action, obs, residual=True, deadzone=0.1)
    past = unclipped & (np.abs(output) > 0.1)
    np.testing.assert_allclose(recovered[past], output[past], atol=1e-6)
    assert np.all(from_env_action(hint, obs, residual=True, deadzone=0.1) == 0.0)
    # The network-side map (torch) is the same map.
    torch.testing.assert_close(
        residual_to_action(torch.from_numpy(output), torch.from_numpy(hint), 0.1), torch.from_numpy(action)
    )
    with pytest.raises(ValueError, match="deadzone"):
        AgentConfig(residual_deadzone=0.1)


def test_a_residual_agent_needs_a_hint_and_a_diffusion_actor() -> None:
    with pytest.raises(ValueError, match="hint"):
        AgentConfig(residual=True)
    with pytest.raises(ValueError, match="diffusion"):
        AgentConfig(algorithm="eat-d", hint="reuse", residual=True)
    assert AgentConfig(algorithm="lad-ts", hint="reuse", residual=True).to_dict()["residual"] is True


def test_a_fresh_residual_agent_acts_exactly_as_its_heuristic() -> None:
    config = dataclasses.replace(TINY, hint="reuse", residual=True)
    agent = build_agent(config, ObservationSpec.from_config(CFG), seed=5)
    policy = LearnedPolicy(CFG, agent.encoder, agent.actor, hinter=make_hinter("reuse", CFG), residual=True)
    obs = observations(list(range(16)))
    np.testing.assert_array_equal(policy.act(obs), make_policy("reuse", CFG).act(obs).astype(np.float32))
    # Exploration starts small: std RESIDUAL_INITIAL_STD in every dimension, whatever the state.
    with torch.no_grad():
        state = agent.encoder(as_tensors(with_hint(obs, policy.hinter)))
        log_std = agent.actor.log_std_head(agent.actor(state, deterministic=True)[2])
    np.testing.assert_allclose(log_std.exp().numpy(), RESIDUAL_INITIAL_STD, rtol=1e-6)
    plain = build_agent(dataclasses.replace(config, residual=False), ObservationSpec.from_config(CFG), seed=5)
    assert not torch.equal(plain.actor.denoiser.output.weight, agent.actor.denoiser.output.weight)


@pytest.mark.slow
def test_a_residual_run_serves_its_corrections_traced_as_eager(tmp_path: Path) -> None:
    agent = dataclasses.replace(TINY, hint="reuse", residual=True, bc_weight=0.5)
    result = train(tiny_settings(tmp_path, agent=agent, teacher="reuse", pretrain_updates=20))
    saved = json.loads((result.final_checkpoint / "config.json").read_text())
    assert saved["agent"]["residual"] is True and saved["agent"]["hint"] == "reuse"
    traced = LearnedPolicy.from_checkpoint(result.final_checkpoint, CFG)
    eager = LearnedPolicy.from_checkpoint(result.final_checkpoint, CFG, compiled=False)
    assert traced.residual and eager.residual
    obs = observations([13, 14, 15])
    np.testing.assert_allclose(traced.act(obs), eager.act(obs), atol=1e-5)
    # Training moved the corrections off zero: the policy is no longer the heuristic itself.
    eager.residual = False
    assert np.abs(eager.act(obs)).max() > 1e-3


def test_a_residual_critic_judges_the_action_an_output_stands_for() -> None:
    config = dataclasses.replace(TINY, hint="reuse", residual=True)
    agent = build_agent(config, ObservationSpec.from_config(CFG), seed=6)
    obs = with_hint(observations([16, 17, 18]), make_hinter("reuse", CFG))
    state = agent.encoder(as_tensors(obs))
    assert state.hint is not None
    output = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, obs[HINT_KEY].shape).astype(np.float32))
    plain = TwinCritic(**{key: value for key, value in agent.critic.config().items() if key != "residual"})
    plain.load_state_dict(agent.critic.state_dict())
    with torch.no_grad():
        expected = plain(state, torch.from_numpy(to_env_action(output.numpy(), obs, residual=True)))
        for got, want in zip(agent.critic(state, output), expected, strict=True):
            torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="hint"):
        agent.critic(state._replace(hint=None), output)


@pytest.mark.slow
def test_a_residual_run_never_ships_its_untrained_self_as_best(tmp_path: Path) -> None:
    """Before its first update a residual agent is its heuristic; evaluations then may not make best/."""
    agent = dataclasses.replace(TINY, hint="reuse", residual=True)
    settings = tiny_settings(tmp_path, agent=agent, warmup_steps=192, eval_every=64, total_steps=304)
    result = train(settings)
    best = json.loads((tmp_path / "best" / "config.json").read_text())
    assert best["progress"]["updates"] > 0
    assert result.best_eval_utility == max(metric_values(result.csv_path, "eval/utility")[2:])
