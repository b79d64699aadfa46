"""The training loop: every algorithm runs, the critic learns, logs and checkpoints are written, a run
resumes where its checkpoint left off, and the `eat train` command wires it all."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from policy_models.checkpoints import CheckpointError, load_checkpoint, restore_modules
from policy_models.config import paper_config
from policy_models.learning.agents import ALGORITHMS, AgentConfig, build_agent, step_checkpoints
from policy_models.learning.sac import build_optimizers, td_error
from policy_models.learning.train import (
    METRIC_PREFIXES,
    TrainResult,
    TrainSettings,
    new_buffer,
    resume,
    train,
)
from policy_models.obs import ObservationSpec
from services.cli import TRAIN_ALGORITHMS, main
from tests.policy_models.learning.test_sac import fixed_batch

torch.set_num_threads(1)

CFG = paper_config(4, 0.05)
TINY = AgentConfig(
    hidden=32,
    score_hidden=16,
    d_model=16,
    attention_ff=32,
    diffusion_steps=3,
    batch_size=64,
    updates_per_step=0.25,  # 2 updates per batched step of 8 envs
    buffer_capacity=4096,
)


def tiny_settings(out_dir: Path, algorithm: str = "eat", **changes: object) -> TrainSettings:
    values: dict[str, object] = dict(
        sim=CFG,
        agent=dataclasses.replace(TINY, algorithm=algorithm),
        total_steps=304,
        n_envs=8,
        seed=3,
        out_dir=out_dir,
        warmup_steps=64,
        eval_every=0,
        eval_seeds=(500, 501),
        checkpoint_every=0,
        log_every=64,
        progress=False,
    )
    values.update(changes)
    return TrainSettings(**values)  # type: ignore[arg-type]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def metric_values(path: Path, name: str) -> list[float]:
    return [float(row["value"]) for row in csv_rows(path) if row["metric"] == name]


@pytest.fixture(scope="module")
def eat_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One short EAT run, evaluated and checkpointed every 160 steps, shared by several tests."""
    out = tmp_path_factory.mktemp("eat_run")
    return train(tiny_settings(out, eval_every=160, checkpoint_every=160, total_steps=400))


def test_every_cli_algorithm_is_an_agent_algorithm() -> None:
    assert (*ALGORITHMS, "ppo") == TRAIN_ALGORITHMS


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "eat"])
def test_each_ablation_trains_briefly_with_finite_losses(algorithm: str, tmp_path: Path) -> None:
    result = train(tiny_settings(tmp_path, algorithm))
    assert result.env_steps == 304 and result.updates > 0
    for name in ("loss/critic", "loss/actor"):
        values = metric_values(result.csv_path, name)
        assert values and all(math.isfinite(v) for v in values)
    assert math.isfinite(result.final_eval_utility)


@pytest.mark.slow
def test_eat_trains_with_finite_losses(eat_run: TrainResult) -> None:
    assert eat_run.env_steps == 400 and eat_run.updates > 50
    for name in ("loss/critic", "loss/actor", "train/q_mean", "train/entropy_estimate"):
        values = metric_values(eat_run.csv_path, name)
        assert values and all(math.isfinite(v) for v in values)


def test_a_short_run_shrinks_the_critics_td_error(eat_run: TrainResult) -> None:
    """The run's initial weights (rebuilt from its seed) against its final ones, on one fixed batch of
    transitions from workloads the run never saw."""
    settings = tiny_settings(eat_run.out_dir)
    spec = ObservationSpec.from_config(CFG)
    initial = build_agent(settings.agent, spec, seed=settings.seed)
    trained = build_agent(settings.agent, spec, seed=settings.seed)
    states, _ = load_checkpoint(eat_run.final_checkpoint)
    restore_modules(trained.modules(), states)
    batch = fixed_batch(size=256, seed=11)
    before = td_error(initial, batch, torch.Generator().manual_seed(0))
    after = td_error(trained, batch, torch.Generator().manual_seed(0))
    assert after < 0.7 * before  # about 0.45 at this commit


def test_logs_have_tensorboard_events_and_a_csv_with_the_fixed_prefixes(eat_run: TrainResult) -> None:
    assert list(eat_run.tensorboard_dir.glob("events.out.tfevents.*"))
    names = {row["metric"] for row in csv_rows(eat_run.csv_path)}
    assert all(name.startswith(METRIC_PREFIXES) for name in names)
    assert {prefix for prefix in METRIC_PREFIXES if any(n.startswith(prefix) for n in names)} == set(
        METRIC_PREFIXES
    )
    assert {"eval/utility", "perf/env_steps_per_s", "perf/updates_per_s", "loss/critic"} <= names
    assert sorted({int(r["step"]) for r in csv_rows(eat_run.csv_path) if r["metric"] == "eval/utility"}) == [
        160,
        320,
        400,
    ]


def test_checkpoints_are_self_describing_and_pruned(eat_run: TrainResult) -> None:
    steps = step_checkpoints(eat_run.out_dir)
    assert [p.name for p in steps] == ["step_000000320", "step_000000400"]  # keep_checkpoints=2
    assert eat_run.final_checkpoint == steps[-1] and eat_run.best_checkpoint is not None
    saved = json.loads((eat_run.final_checkpoint / "config.json").read_text())
    assert saved["agent"] == TINY.to_dict() | {"algorithm": "eat"}
    assert saved["sim_configs"] == [json.loads(CFG.to_json())]
    assert saved["obs_spec_version"] == ObservationSpec.from_config(CFG).version
    assert saved["action_dim"] == CFG.action_dim and saved["seed"] == 3
    assert saved["progress"]["env_steps"] == 400 and saved["training"]["n_envs"] == 8
    assert set(saved["code_version"]) == {"package", "git"}
    assert set(saved["modules"]) == {"encoder", "actor", "critic", "target_critic"}
    assert (eat_run.final_checkpoint / "buffer_0" / "buffer.safetensors").is_file()


def test_resume_restores_weights_optimisers_and_counters(eat_run: TrainResult, tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, resume_from=eat_run.out_dir)
    spec = ObservationSpec.from_config(CFG)
    agent = build_agent(settings.agent, spec, seed=settings.seed)
    optimizers = build_optimizers(agent)
    progress, _, buffers = resume(settings, agent, optimizers, [new_buffer(CFG, settings, 0)])

    states, saved = load_checkpoint(eat_run.final_checkpoint)
    for name, module in agent.modules().items():
        for key, tensor in module.state_dict().items():
            assert torch.equal(tensor, states[name][key]), f"{name}.{key}"
    assert progress.env_steps == 400 and progress.updates == saved["progress"]["updates"]
    adam_steps = {float(s["step"]) for s in optimizers.critic.state_dict()["state"].values()}
    assert adam_steps == {float(progress.updates)}
    assert len(buffers[0]) == 400


def test_a_resumed_run_continues_from_the_saved_step(eat_run: TrainResult, tmp_path: Path) -> None:
    saved_updates = json.loads((eat_run.final_checkpoint / "config.json").read_text())["progress"]["updates"]
    result = train(tiny_settings(tmp_path, resume_from=eat_run.out_dir, total_steps=480))
    assert result.start_step == 400 and result.env_steps == 480
    assert result.updates > saved_updates
    assert min(int(r["step"]) for r in csv_rows(result.csv_path)) > 400


def test_resuming_twice_from_one_checkpoint_gives_the_same_weights(
    eat_run: TrainResult, tmp_path: Path
) -> None:
    digests = []
    for name in ("a", "b"):
        result = train(tiny_settings(tmp_path / name, resume_from=eat_run.final_checkpoint, total_steps=448))
        digests.append(json.loads((result.final_checkpoint / "config.json").read_text())["weights_sha256"])
    assert digests[0] == digests[1]


def test_resume_refuses_other_settings(eat_run: TrainResult, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(tiny_settings(tmp_path, "eat-d", resume_from=eat_run.out_dir, total_steps=480))


def test_cross_size_training_steps_each_cluster_in_turn(tmp_path: Path) -> None:
    configs = (paper_config(4, 0.05), paper_config(8, 0.1))
    result = train(tiny_settings(tmp_path, sim=configs, total_steps=160))
    assert result.env_steps == 160
    assert (result.final_checkpoint / "buffer_0").is_dir() and (result.final_checkpoint / "buffer_1").is_dir()
    names = {row["metric"] for row in csv_rows(result.csv_path)}
    assert {"eval/utility_n4_rate0.05", "eval/utility_n8_rate0.1"} <= names


def test_flat_agents_refuse_cross_size_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flat encoder"):
        tiny_settings(tmp_path, "eat-a", sim=(paper_config(4, 0.05), paper_config(8, 0.1)))


def test_eat_train_command_trains_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = ["train", "--algo", "eat-da", "--nodes", "4", "--rate", "0.05", "--envs", "8", "--seed", "1"]
    argv += ["--steps", "96", "--warmup", "32", "--batch-size", "32", "--eval-every", "0"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoints:" in printed and str(out / "checkpoints") in printed
    assert "eval utility" in printed and str(out / "tensorboard") in printed

    # Resuming needs neither --algo nor --nodes: they come from the checkpoint.
    resumed = ["train", "--resume", str(out), "--steps", "128", "--envs", "8", "--seed", "1"]
    resumed += ["--warmup", "32", "--batch-size", "32", "--eval-every", "0"]
    assert main([*resumed, "--out", str(out), "--no-progress"]) == 0
    assert "128 env steps" in capsys.readouterr().out
    assert [p.name for p in step_checkpoints(out)] == ["step_000000096", "step_000000128"]


@pytest.mark.slow
def test_the_train_command_runs_and_resumes_ppo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ppo"
    argv = ["train", "--algo", "ppo", "--nodes", "4", "--rate", "0.05", "--envs", "4", "--seed", "1"]
    argv += ["--rollout-steps", "8", "--steps", "32", "--eval-every", "0", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "trained ppo: 32 env steps" in capsys.readouterr().out

    # The algorithm comes from the checkpoint when resuming.
    resumed = ["train", "--resume", str(out), "--steps", "64", "--envs", "4", "--seed", "1"]
    resumed += ["--rollout-steps", "8", "--eval-every", "0", "--out", str(out), "--no-progress"]
    assert main(resumed) == 0
    assert "trained ppo: 64 env steps" in capsys.readouterr().out


def test_paper_rates_make_one_cluster_config_per_rate() -> None:
    from services.cli import _train_configs, build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--nodes", "4", "12", "--paper-rates"])
    configs = _train_configs(args, parser)
    assert [(c.n_servers, c.arrival_rate) for c in configs] == [
        *((4, r) for r in (0.01, 0.03, 0.05, 0.07, 0.09)),
        *((12, r) for r in (0.11, 0.13, 0.15, 0.17, 0.19)),
    ]
    with pytest.raises(SystemExit):
        _train_configs(parser.parse_args(["train", "--nodes", "4", "--paper-rates", "--rate", "0.1"]), parser)


def test_eat_train_validates_on_as_many_seeds_as_asked(tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    argv = ["train", "--algo", "eat", "--nodes", "4", "--rate", "0.05", "--envs", "8", "--steps", "32"]
    argv += ["--warmup", "32", "--eval-seeds", "7", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    saved = json.loads((step_checkpoints(out)[-1] / "config.json").read_text())
    assert saved["training"]["eval_seeds"] == list(range(500, 507))
