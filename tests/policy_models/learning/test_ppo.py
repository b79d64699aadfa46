"""PPO: GAE and the clipped objective by hand, one update, and a tiny run that logs, checkpoints,
resumes and serves as a deterministic `checkpoint:<dir>` policy."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from policy_models.checkpoints import CheckpointError, load_checkpoint
from policy_models.config import paper_config
from policy_models.evaluation import evaluate_policy
from policy_models.learning.agents import step_checkpoints
from policy_models.learning.ppo import (
    PPOAgent,
    PPOBatch,
    PPOConfig,
    PPOSettings,
    build_optimizer,
    build_ppo_agent,
    clipped_policy_loss,
    collect_rollout,
    compute_gae,
    evaluate_actions,
    ppo_update,
    resume_ppo,
    sample_actions,
    train_ppo,
)
from policy_models.learning.train import METRIC_PREFIXES, TrainResult
from policy_models.nets import GaussianActor, as_tensors
from policy_models.obs import ObservationSpec
from policy_models.policies import make_policy
from policy_models.policies.learned import LearnedPolicy
from policy_models.sim.batched import BatchedClusterSim

torch.set_num_threads(1)

CFG = paper_config(4, 0.05)
TINY = PPOConfig(
    hidden=32,
    score_hidden=16,
    value_hidden=32,
    d_model=16,
    attention_ff=32,
    rollout_steps=16,  # 8 envs: 128 steps per rollout
    epochs=2,
    minibatches=2,
)
EVAL_SEEDS = (500, 501)


def tiny_settings(out_dir: Path, **changes: object) -> PPOSettings:
    values: dict[str, object] = dict(
        sim=CFG,
        agent=TINY,
        total_steps=256,
        n_envs=8,
        seed=3,
        out_dir=out_dir,
        eval_every=128,
        eval_seeds=EVAL_SEEDS,
        checkpoint_every=128,
        progress=False,
    )
    values.update(changes)
    return PPOSettings(**values)  # type: ignore[arg-type]


def tiny_batch(agent: PPOAgent, steps: int = 8, seed: int = 0) -> PPOBatch:
    sim = BatchedClusterSim(CFG, list(range(8)))
    rollout, _, _ = collect_rollout(agent, sim, sim.reset(), steps, torch.Generator().manual_seed(seed))
    return PPOBatch.from_rollout(rollout, TINY.gamma, TINY.gae_lambda)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def metric_values(path: Path, name: str) -> list[float]:
    return [float(row["value"]) for row in csv_rows(path) if row["metric"] == name]


def config_json(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


# ----- GAE and the objective, by hand ------------------------------------------------------------------
def test_gae_matches_a_hand_computation_with_a_terminal_in_the_middle() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends at step 1; step 2 starts the next
    gamma, lam = 0.9, 0.8
    advantages, returns = compute_gae(rewards, values, dones, torch.tensor([2.0]), gamma, lam)
    a2 = 3.0 + gamma * 2.0 - 1.5  # bootstraps from the value after the rollout
    a1 = 2.0 - 1.0  # terminal: no bootstrap, and the trace from step 2 is cut
    a0 = (1.0 + gamma * 1.0 - 0.5) + gamma * lam * a1
    assert advantages[:, 0].tolist() == pytest.approx([a0, a1, a2])  # [2.12, 1.0, 3.3]
    assert returns[:, 0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5])


def test_the_clipped_objective_equals_the_unclipped_one_at_ratio_one() -> None:
    advantages = torch.tensor([1.5, -2.0, 0.3, -0.7])
    log_ratio = torch.zeros(4, requires_grad=True)
    clipped = clipped_policy_loss(log_ratio.exp(), advantages, clip_coef=0.2)
    (clipped_grad,) = torch.autograd.grad(clipped, log_ratio)
    unclipped = -(log_ratio.exp() * advantages).mean()
    (unclipped_grad,) = torch.autograd.grad(unclipped, log_ratio)
    assert clipped.item() == pytest.approx(unclipped.item())
    assert torch.allclose(clipped_grad, unclipped_grad)


def test_the_clipped_objective_stops_at_the_clip_range() -> None:
    ratio = torch.tensor([1.5, 0.5])
    advantages = torch.tensor([1.0, -1.0])  # both would gain from moving the ratio further
    assert clipped_policy_loss(ratio, advantages, clip_coef=0.2).item() == pytest.approx(-(1.2 - 0.8) / 2)


# ----- one update --------------------------------------------------------------------------------------
def test_evaluate_actions_gives_back_the_log_probs_of_the_sampled_actions() -> None:
    agent = build_ppo_agent(TINY, seed=0)
    obs = as_tensors(BatchedClusterSim(CFG, list(range(8))).reset())
    action, log_prob, value = sample_actions(agent, obs, torch.Generator().manual_seed(1))
    with torch.no_grad():
        recomputed, entropy, recomputed_value = evaluate_actions(agent, obs, action)
    assert torch.allclose(recomputed, log_prob, atol=1e-4)
    assert torch.equal(recomputed_value, value) and torch.isfinite(entropy).all()


def test_one_update_changes_every_module_and_returns_finite_stats() -> None:
    agent = build_ppo_agent(TINY, seed=0)
    optimizer = build_optimizer(agent)
    batch = tiny_batch(agent)
    before = {name: snapshot(module) for name, module in agent.modules().items()}
    stats = ppo_update(agent, optimizer, batch, torch.Generator().manual_seed(0))
    for name, module in agent.modules().items():
        assert any(not torch.equal(before[name][k], p) for k, p in module.named_parameters()), name
    values = dataclasses.asdict(stats)
    assert all(math.isfinite(v) for v in values.values()), values
    assert stats.gradient_steps == TINY.epochs * TINY.minibatches
    assert stats.approx_kl >= 0.0 and 0.0 <= stats.clip_fraction <= 1.0


# ----- a tiny training run -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Two rollouts of 128 steps, evaluated and checkpointed after each."""
    return train_ppo(tiny_settings(tmp_path_factory.mktemp("ppo_run")))


def test_a_tiny_run_logs_finite_losses_under_the_fixed_prefixes(ppo_run: TrainResult) -> None:
    assert ppo_run.env_steps == 256 and ppo_run.updates == 2 * TINY.epochs * TINY.minibatches
    for name in ("loss/policy", "loss/value", "train/entropy", "train/approx_kl", "train/grad_norm"):
        values = metric_values(ppo_run.csv_path, name)
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name
    names = {row["metric"] for row in csv_rows(ppo_run.csv_path)}
    assert {p for p in METRIC_PREFIXES if any(n.startswith(p) for n in names)} == set(METRIC_PREFIXES)
    assert list(ppo_run.tensorboard_dir.glob("events.out.tfevents.*"))
    assert len(metric_values(ppo_run.csv_path, "eval/utility")) == 2  # at 128 and at the end
    assert math.isfinite(ppo_run.final_eval_utility)


def test_the_checkpoint_is_self_describing(ppo_run: TrainResult) -> None:
    assert [p.name for p in step_checkpoints(ppo_run.out_dir)] == ["step_000000128", "step_000000256"]
    assert ppo_run.final_checkpoint.name == "step_000000256" and ppo_run.best_checkpoint is not None
    saved = config_json(ppo_run.final_checkpoint)
    assert saved["algorithm"] == "ppo" and saved["agent"] == TINY.to_dict()
    assert saved["obs_spec_version"] == ObservationSpec.from_config(CFG).version
    assert saved["action_dim"] == CFG.action_dim and saved["seed"] == 3
    assert saved["progress"]["env_steps"] == 256 and saved["training"]["n_envs"] == 8
    assert set(saved["code_version"]) == {"package", "git"}
    assert set(saved["modules"]) == {"encoder", "actor", "value"}
    assert saved["modules"]["actor"]["config"]["token_dim"] == TINY.d_model  # per-task layout
    assert (ppo_run.final_checkpoint / "trainer_state.safetensors").is_file()


def test_resume_restores_weights_optimiser_and_counters(ppo_run: TrainResult, tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, resume_from=ppo_run.out_dir)
    agent = build_ppo_agent(TINY, seed=settings.seed)
    optimizer = build_optimizer(agent)
    progress, _ = resume_ppo(settings, agent, optimizer)
    states, _ = load_checkpoint(ppo_run.final_checkpoint)
    for name, module in agent.modules().items():
        for key, tensor in module.state_dict().items():
            assert torch.equal(tensor, states[name][key]), f"{name}.{key}"
    assert progress.env_steps == 256 and progress.updates == ppo_run.updates
    assert {float(s["step"]) for s in optimizer.state_dict()["state"].values()} == {float(ppo_run.updates)}


def test_a_resumed_run_continues_from_the_saved_step(ppo_run: TrainResult, tmp_path: Path) -> None:
    # Resumed at its own end, a run changes nothing: the same weights are saved again.
    same = train_ppo(tiny_settings(tmp_path / "same", resume_from=ppo_run.out_dir))
    assert same.start_step == same.env_steps == 256
    assert (
        config_json(same.final_checkpoint)["weights_sha256"]
        == config_json(ppo_run.final_checkpoint)["weights_sha256"]
    )
    # Resumed further, it goes on from step 256 and from the saved number of updates.
    more = train_ppo(tiny_settings(tmp_path / "more", resume_from=ppo_run.out_dir, total_steps=384))
    assert more.start_step == 256 and more.env_steps == 384
    assert more.updates == ppo_run.updates + TINY.epochs * TINY.minibatches
    assert min(int(row["step"]) for row in csv_rows(more.csv_path)) > 256


def test_resume_refuses_other_settings(ppo_run: TrainResult, tmp_path: Path) -> None:
    other = dataclasses.replace(TINY, epochs=3)
    with pytest.raises(CheckpointError, match="cannot resume"):
        train_ppo(tiny_settings(tmp_path, agent=other, resume_from=ppo_run.out_dir, total_steps=384))


def test_cross_size_training_alternates_rollouts_between_clusters(tmp_path: Path) -> None:
    configs = (CFG, paper_config(8, 0.1))
    result = train_ppo(tiny_settings(tmp_path, sim=configs, eval_every=0, checkpoint_every=0))
    assert result.env_steps == 256  # one rollout of each
    names = {row["metric"] for row in csv_rows(result.csv_path)}
    assert {"eval/utility_n4_rate0.05", "eval/utility_n8_rate0.1"} <= names


def test_the_checkpoint_serves_as_a_deterministic_policy(ppo_run: TrainResult) -> None:
    policy = make_policy(f"checkpoint:{ppo_run.out_dir}", CFG)  # a run directory serves its best/
    assert isinstance(policy, LearnedPolicy) and isinstance(policy.actor, GaussianActor)
    name = f"checkpoint:{ppo_run.best_checkpoint}"
    first, second = evaluate_policy(name, CFG, EVAL_SEEDS), evaluate_policy(name, CFG, EVAL_SEEDS)
    assert first == second
    assert first.utility.mean == pytest.approx(ppo_run.best_eval_utility)  # what training measured


def test_a_time_limit_ends_the_run_after_a_whole_rollout(tmp_path: Path) -> None:
    result = train_ppo(tiny_settings(tmp_path, total_steps=10**9, time_limit_s=0.5, eval_every=0))
    rollout = tiny_settings(tmp_path).rollout_size
    assert 0 < result.env_steps < 10**9 and result.env_steps % rollout == 0
    assert result.final_checkpoint.is_dir()
    with pytest.raises(ValueError, match="time_limit_s"):
        tiny_settings(tmp_path, time_limit_s=0.0)
