"""Learning from a teacher: the imitation loss reads actions as the selector decodes them, the Q-filter
keeps only samples where the teacher is rated better, pretraining makes the actor pick the teacher's
tasks, and a guided run logs its imitation metrics."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_models.learning.agents import build_agent, step_checkpoints
from policy_models.learning.imitation import imitation_loss, make_teacher, noisy, q_filtered
from policy_models.learning.train import train
from policy_models.obs import T_IDX, ObservationSpec
from policy_models.policies import Policy
from policy_models.policies.learned import LearnedPolicy
from policy_models.sim.batched import BatchedClusterSim
from services.cli import main
from tests.policy_models.learning.test_train import CFG, TINY, metric_values, tiny_settings

torch.set_num_threads(1)


def actions(execute: float, steps: float, scores: list[float]) -> torch.Tensor:
    return torch.tensor([[execute, steps, *scores]])


def test_the_loss_is_lower_for_the_teachers_task_than_for_another() -> None:
    teacher = actions(1.0, 0.2, [-1.0, 1.0, -1.0])
    feasible = torch.tensor([[True, True, True]])
    same = imitation_loss(actions(1.0, 0.2, [-1.0, 1.0, -1.0]), teacher, feasible, 0.1)
    other = imitation_loss(actions(1.0, 0.2, [1.0, -1.0, -1.0]), teacher, feasible, 0.1)
    assert same.item() < 1e-3 < other.item()


def test_infeasible_slots_and_states_without_a_feasible_task_do_not_count() -> None:
    teacher = actions(1.0, 0.0, [-1.0, 1.0, -1.0])
    # Slot 0 is not feasible: scoring it highest costs nothing, the selector would not pick it.
    feasible = torch.tensor([[False, True, True]])
    loss = imitation_loss(actions(1.0, 0.0, [1.0, 0.5, -1.0]), teacher, feasible, 0.1)
    assert loss.item() < 1e-2
    nothing_feasible = torch.tensor([[False, False, False]])
    mu = actions(-0.3, 0.9, [0.4, -0.2, 0.1]).requires_grad_(True)
    loss = imitation_loss(mu, teacher, nothing_feasible, 0.1)
    loss.sum().backward()
    assert loss.item() == 0.0 and torch.all(mu.grad == 0)


def test_steps_count_only_when_the_teacher_launches() -> None:
    feasible = torch.tensor([[True, True]])
    waits = actions(-1.0, 0.5, [1.0, -1.0])
    assert imitation_loss(actions(-1.0, -0.9, [1.0, -1.0]), waits, feasible, 0.1).item() < 1e-6
    launches = actions(1.0, 0.5, [1.0, -1.0])
    assert imitation_loss(actions(1.0, -0.9, [1.0, -1.0]), launches, feasible, 0.1).item() > 1.9


def test_the_q_filter_keeps_samples_where_the_teacher_is_rated_better() -> None:
    per_sample = torch.tensor([1.0, 2.0, 3.0, 4.0])
    term = q_filtered(per_sample, torch.tensor([5.0, 0.0, 5.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert term.loss.item() == pytest.approx((1.0 + 3.0) / 4)
    assert term.kept_share == 0.5 and term.raw_loss == pytest.approx(2.5)


def test_only_memoryless_heuristics_teach() -> None:
    with pytest.raises(ValueError, match="teacher"):
        make_teacher("ga", CFG)


def test_noise_keeps_actions_in_range() -> None:
    out = noisy(np.ones((100, 4)), 0.5, np.random.default_rng(0))
    assert out.max() <= 1.0 and out.min() >= -1.0 and out.std() > 0


def picks(policy_actions: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    scores = np.where(feasible, policy_actions[:, 2:], -np.inf)
    return scores.argmax(1)


@dataclass(frozen=True)
class Agreement:
    task: float  # where the teacher launches with a choice of tasks: share picking its task
    execute: float  # where some task is feasible: share making its launch-or-wait call
    steps_error: float  # where the teacher launches: mean |steps - the teacher's steps|


def agreement(policy: Policy, seeds: range, batched_steps: int = 40) -> Agreement:
    """How closely `policy` acts like the reuse heuristic along the heuristic's own (slightly noisy)
    trajectories."""
    sim = BatchedClusterSim(CFG, list(seeds))
    obs = sim.reset()
    teacher = make_teacher("reuse", CFG)
    rng = np.random.default_rng(0)
    tasks, executes, step_errors = [], [], []
    for _ in range(batched_steps):
        expert, mine = teacher.act(obs), policy.act(obs)
        feasible = obs["tasks"][..., T_IDX["feasible"]] > 0.5
        launches = expert[:, 0] > 0
        choice = (feasible.sum(1) > 1) & launches
        tasks.extend((picks(mine, feasible) == picks(expert, feasible))[choice])
        executes.extend(((mine[:, 0] > 0) == launches)[feasible.any(1)])
        step_errors.extend(np.abs(mine[:, 1] - expert[:, 1])[launches] * (CFG.max_steps - CFG.min_steps) / 2)
        obs = sim.step(noisy(expert, 0.05, rng)).obs
    assert len(tasks) > 200
    return Agreement(float(np.mean(tasks)), float(np.mean(executes)), float(np.mean(step_errors)))


@pytest.mark.slow
def test_pretraining_makes_the_actor_act_like_the_teacher(tmp_path: Path) -> None:
    """After the warm-up on the teacher's data and 400 imitation updates (small networks), the
    deterministic policy acts far more like the teacher on held-out workloads than its untrained self
    (measured at this commit: task 0.44 -> 0.63, execute 0.13 -> 0.87, steps error 11.5 -> 7.0)."""
    agent = dataclasses.replace(
        TINY,
        hidden=64,
        score_hidden=32,
        d_model=32,
        attention_ff=64,
        diffusion_steps=5,
        batch_size=128,
        actor_lr=1e-3,
    )
    settings = tiny_settings(
        tmp_path,
        agent=agent,
        teacher="reuse",
        teacher_noise=0.1,
        pretrain_updates=400,
        warmup_steps=2048,
        total_steps=2048,
        n_envs=16,
    )
    result = train(settings)
    untrained = build_agent(settings.agent, ObservationSpec.from_config(CFG), seed=settings.seed)
    before = agreement(LearnedPolicy(CFG, untrained.encoder, untrained.actor), range(900, 964))
    after = agreement(LearnedPolicy.from_checkpoint(result.final_checkpoint, CFG), range(900, 964))
    assert after.execute > 0.75 and after.execute > before.execute + 0.3, (before, after)
    assert after.task > before.task + 0.1, (before, after)
    assert after.steps_error < 0.8 * before.steps_error, (before, after)


@pytest.mark.slow
def test_a_guided_run_logs_the_q_filter(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, teacher="reuse", pretrain_updates=20)
    settings = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, bc_weight=0.5))
    result = train(settings)
    kept = metric_values(result.csv_path, "train/imitation_kept")
    assert kept and all(0.0 <= k <= 1.0 for k in kept) and min(kept) < 1.0
    assert all(math.isfinite(v) for v in metric_values(result.csv_path, "loss/actor"))


@pytest.mark.slow
def test_without_the_q_filter_every_sample_imitates(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, teacher="reuse", pretrain_updates=20)
    agent = dataclasses.replace(settings.agent, bc_weight=0.5, q_filter=False)
    result = train(dataclasses.replace(settings, agent=agent))
    kept = metric_values(result.csv_path, "train/imitation_kept")
    assert kept and all(k == 1.0 for k in kept)
    assert json.loads((result.final_checkpoint / "config.json").read_text())["agent"]["q_filter"] is False


def test_a_teacher_is_needed_for_imitation_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="teacher"):
        tiny_settings(tmp_path, pretrain_updates=10)


@pytest.mark.slow
def test_eat_train_learns_from_a_teacher_and_resumes_with_it(tmp_path: Path) -> None:
    out = tmp_path / "guided"
    argv = ["train", "--algo", "eat", "--nodes", "4", "--rate", "0.05", "--envs", "8", "--seed", "1"]
    argv += ["--warmup", "32", "--batch-size", "32", "--eval-every", "0", "--out", str(out), "--no-progress"]
    guided = ["--teacher", "reuse", "--pretrain-updates", "4", "--bc-weight", "0.5"]
    assert main([*argv, "--steps", "64", *guided]) == 0
    saved = json.loads((step_checkpoints(out)[-1] / "config.json").read_text())
    assert saved["training"]["teacher"] == "reuse" and saved["agent"]["bc_weight"] == 0.5
    assert saved["progress"]["pretrained"] is True
    # Resumed without --teacher: the checkpoint's teacher; pretraining is not repeated.
    assert main(["train", "--resume", str(out), *argv[7:], "--steps", "96"]) == 0
    kept = metric_values(out / "metrics.csv", "train/imitation_kept")
    assert kept and kept[-1] < 1.0


def test_pretraining_steps_the_actor_at_its_own_learning_rate_and_restores_it() -> None:
    from policy_models.learning.train import learning_rate

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    with learning_rate(optimizer, 1e-3):
        assert optimizer.param_groups[0]["lr"] == 1e-3
    assert optimizer.param_groups[0]["lr"] == 1e-4
    with learning_rate(optimizer, None):
        assert optimizer.param_groups[0]["lr"] == 1e-4


def test_a_pretraining_rate_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrain_lr"):
        tiny_settings(tmp_path, teacher="reuse", pretrain_updates=4, pretrain_lr=0.0)


@pytest.mark.slow
def test_pretraining_waits_for_a_batch_of_teacher_data(tmp_path: Path) -> None:
    """No warm-up and 3-step returns (the buffer stays empty for the first steps): pretraining starts
    once the buffer holds a batch, not on an empty buffer."""
    agent = dataclasses.replace(TINY, n_step=3)
    result = train(tiny_settings(tmp_path, agent=agent, teacher="reuse", pretrain_updates=3, warmup_steps=0))
    assert result.env_steps == 304 and metric_values(result.csv_path, "loss/imitation")
