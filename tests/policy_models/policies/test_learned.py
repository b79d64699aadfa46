"""A trained agent as a policy: rebuilt from its checkpoint alone, deterministic, and refused where its
observation spec or action size does not fit the cluster."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_models.checkpoints import CheckpointError, save_checkpoint
from policy_models.config import SimConfig, paper_config
from policy_models.evaluation import evaluate
from policy_models.learning.agents import BEST_DIR, Agent, AgentConfig, build_agent
from policy_models.learning.train import Progress, TrainSettings, checkpoint_config
from policy_models.nets import as_tensors
from policy_models.obs import SLO_TASK_FEATURES, TASK_FEATURES, ObservationSpec
from policy_models.policies import make_policy
from policy_models.policies.learned import LearnedPolicy
from policy_models.sim.batched import BatchedClusterSim
from policy_models.suites import hard_suite

torch.set_num_threads(1)

CFG = paper_config(4, 0.05)
TINY = AgentConfig(hidden=32, score_hidden=16, d_model=16, attention_ff=32, diffusion_steps=3)


def saved_agent(directory: Path, algorithm: str, cfg: SimConfig = CFG) -> Agent:
    """An untrained agent written as a training run would write it."""
    settings = TrainSettings(sim=cfg, agent=dataclasses.replace(TINY, algorithm=algorithm), out_dir=directory)
    agent = build_agent(settings.agent, ObservationSpec.from_config(cfg), seed=0)
    if algorithm == "eat-d":
        # Bias the execute flag up so that the policy launches tasks and evaluation has something to
        # measure (untrained, its mean flag is negative and it would only ever wait).
        with torch.no_grad():
            agent.actor.decision[-1].bias[0] = 3.0
    save_checkpoint(directory, agent.modules(), checkpoint_config(settings, Progress()))
    return agent


def first_observation(cfg: SimConfig = CFG, n_envs: int = 4) -> dict[str, np.ndarray]:
    return BatchedClusterSim(cfg, list(range(n_envs))).reset()


def test_a_checkpoint_policy_acts_like_the_agent_it_was_saved_from(tmp_path: Path) -> None:
    agent = saved_agent(tmp_path, "eat")
    policy = make_policy(f"checkpoint:{tmp_path}", CFG)
    assert isinstance(policy, LearnedPolicy)
    obs = first_observation()
    action = policy.act(obs)
    with torch.no_grad():
        _, _, expected = agent.actor(agent.encoder(as_tensors(obs)), deterministic=True)
    assert action.dtype == np.float32 and action.shape == (4, CFG.action_dim)
    # The same operations on the same weights, as a traced graph: equal up to float rounding.
    np.testing.assert_allclose(action, expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(policy.act(obs), action)  # no sampling anywhere


def test_modules_a_trainer_switched_to_train_mode_act_in_eval_mode(tmp_path: Path) -> None:
    agent = build_agent(TINY, ObservationSpec.from_config(CFG), seed=0)
    policy = LearnedPolicy(CFG, agent.encoder, agent.actor)
    obs = first_observation()
    served = policy.act(obs)
    agent.encoder.train()  # a trainer sharing the modules (as the online trainer's evaluation does)
    agent.actor.train()
    np.testing.assert_array_equal(policy.act(obs), served)
    assert not any(m.training for m in (*agent.encoder.modules(), *agent.actor.modules()))


@pytest.mark.parametrize("algorithm", ["eat", "eat-a", "eat-d", "eat-da"])
def test_a_traced_decision_acts_as_the_eager_modules_along_a_trajectory(
    algorithm: str, tmp_path: Path
) -> None:
    saved_agent(tmp_path, algorithm)
    traced = LearnedPolicy.from_checkpoint(tmp_path, CFG)
    eager = LearnedPolicy(CFG, traced.encoder, traced.actor)
    assert traced.compiled and not eager.compiled
    sim = BatchedClusterSim(CFG, [7, 8, 9])
    obs = sim.reset()
    for _ in range(40):  # states the policy itself leads to, launches and waits alike
        action = eager.act(obs)
        np.testing.assert_allclose(traced.act(obs), action, atol=1e-5)
        obs = sim.step(action).obs
    np.testing.assert_allclose(traced.act({k: v[:1] for k, v in obs.items()}), eager.act(obs)[:1], atol=1e-5)
    assert len(traced._traced) == 2  # one graph per batch size


def test_an_attention_policy_traces_each_cluster_size_apart(tmp_path: Path) -> None:
    saved_agent(tmp_path, "eat")
    traced = LearnedPolicy.from_checkpoint(tmp_path, CFG)
    eager = LearnedPolicy(CFG, traced.encoder, traced.actor)
    for cfg in (CFG, paper_config(8, 0.1), paper_config(12, 0.15), CFG):
        obs = first_observation(cfg)
        np.testing.assert_allclose(traced.act(obs), eager.act(obs), atol=1e-5)
    assert len(traced._traced) == 3


def test_prepare_traces_the_batch_1_decision_a_server_makes(tmp_path: Path) -> None:
    saved_agent(tmp_path, "eat")
    policy = LearnedPolicy.from_checkpoint(tmp_path, CFG)
    assert not policy._traced
    policy.prepare()
    ((servers, tasks, globals_),) = policy._traced
    assert servers[:2] == (1, CFG.n_servers) and tasks[0] == globals_[0] == 1


def test_lad_ts_stays_eager_its_chain_starts_from_a_per_state_prior(tmp_path: Path) -> None:
    saved_agent(tmp_path, "lad-ts")
    policy = LearnedPolicy.from_checkpoint(tmp_path, CFG)
    assert policy.prior is not None and not policy.compiled


def test_evaluation_of_a_checkpoint_is_deterministic(tmp_path: Path) -> None:
    saved_agent(tmp_path, "eat-d")
    name = f"checkpoint:{tmp_path}"
    first = evaluate([name], [CFG], seeds=(1000, 1001))
    second = evaluate([name], [CFG], seeds=(1000, 1001))
    assert first == second
    assert first[0].policy == name and first[0].utility.mean > 0  # it launched tasks


def test_a_run_directory_serves_its_best_checkpoint(tmp_path: Path) -> None:
    saved_agent(tmp_path / BEST_DIR, "eat")
    policy = make_policy(f"checkpoint:{tmp_path}", CFG)
    assert policy.name == f"checkpoint:{tmp_path / BEST_DIR}"


def test_an_attention_agent_serves_another_cluster_size(tmp_path: Path) -> None:
    saved_agent(tmp_path, "eat")
    bigger = paper_config(8, 0.1)
    action = make_policy(f"checkpoint:{tmp_path}", bigger).act(first_observation(bigger))
    assert action.shape == (4, bigger.action_dim) and np.isfinite(action).all()


def test_a_policy_made_without_slo_features_reads_the_columns_it_knows(tmp_path: Path) -> None:
    """On a cluster with SLO classes the task tokens carry two more features; an agent trained without
    them acts on the first TASK_FEATURES columns, exactly as on the same tokens without the extras."""
    saved_agent(tmp_path, "eat")
    hard = hard_suite().settings[0]
    obs = first_observation(hard)
    assert obs["tasks"].shape[-1] == len(TASK_FEATURES) + len(SLO_TASK_FEATURES)
    policy = make_policy(f"checkpoint:{tmp_path}", hard)
    trimmed = {**obs, "tasks": np.ascontiguousarray(obs["tasks"][..., : len(TASK_FEATURES)])}
    np.testing.assert_array_equal(policy.act(obs), policy.act(trimmed))
    fresh = build_agent(TINY, ObservationSpec.from_config(hard), seed=0)
    assert fresh.encoder.config()["task_features"] == len(TASK_FEATURES) + len(SLO_TASK_FEATURES)


def test_another_action_size_is_refused(tmp_path: Path) -> None:
    saved_agent(tmp_path, "eat")
    with pytest.raises(CheckpointError, match=r"action_dim 12 .* this config has action_dim 10"):
        LearnedPolicy.from_checkpoint(tmp_path, paper_config(4, 0.05, visible_queue=8))


def test_another_observation_spec_version_is_refused(tmp_path: Path) -> None:
    saved_agent(tmp_path / "original", "eat")
    shutil.copytree(tmp_path / "original", tmp_path / "edited")
    config_path = tmp_path / "edited" / "config.json"
    saved = json.loads(config_path.read_text())
    saved["obs_spec_version"] = 999
    config_path.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="observation spec v999"):
        make_policy(f"checkpoint:{tmp_path / 'edited'}", CFG)


def test_a_flat_agent_refuses_another_cluster_size(tmp_path: Path) -> None:
    saved_agent(tmp_path, "eat-da")
    with pytest.raises(CheckpointError, match="flat encoder"):
        make_policy(f"checkpoint:{tmp_path}", paper_config(8, 0.1))


def test_unknown_names_and_missing_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("no-such-policy", CFG)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint nor a training run"):
        make_policy(f"checkpoint:{tmp_path}", CFG)


def test_the_eval_command_takes_a_checkpoint_policy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    saved_agent(tmp_path / "run", "eat-d")
    name = f"checkpoint:{tmp_path / 'run'}"
    assert main(["eval", "--nodes", "4", "--rates", "0.05", "--policies", name, "--seeds", "2"]) == 0
    assert f"| {name} |" in capsys.readouterr().out
