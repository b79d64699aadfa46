"""The online trainer's core without a broker: live snapshots into the replay buffer, SAC updates after
warm-up, evaluation against the serving policy, promotion to a loadable checkpoint, save and resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_models.checkpoints import CheckpointError
from policy_models.evaluation import evaluate_policy
from policy_models.live import LiveScheduler, ModelCatalog, TaskInfo, observe
from policy_models.obs import OBS_SPEC_VERSION, ObservationSpec
from policy_models.policies import make_policy
from services.trainer.core import InvalidTransition, OnlineTrainer, TrainerConfig
from tests.services.trainer.builders import (
    EVAL_SIM,
    MODELS,
    SIM,
    random_snapshot,
    random_transition,
    tiny_config,
)

UNKNOWN_MODEL = TaskInfo(task_id="t9", waiting_s=1.0, patches=1, model="not-served")


def fill(trainer: OnlineTrainer, count: int, seed: int = 0, episode: str = "ep") -> None:
    rng = np.random.default_rng(seed)
    start = trainer.counters.transitions
    for step in range(start, start + count):
        assert trainer.add_transition(random_transition(rng, episode, step))


def weights(trainer: OnlineTrainer) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": tensor.detach().clone()
        for name, module in trainer.agent.modules().items()
        for key, tensor in module.state_dict().items()
    }


def trained(config: TrainerConfig, transitions: int = 12) -> OnlineTrainer:
    trainer = OnlineTrainer.start(config)
    fill(trainer, transitions)
    trainer.maybe_update(100)
    return trainer


# ----- transitions -------------------------------------------------------------------------------------
def test_a_live_transition_is_stored_as_the_policy_observes_it(tmp_path: Path) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path))
    rng = np.random.default_rng(1)
    transition = random_transition(rng, "ep", 0, truncated=True)
    assert trainer.add_transition(transition)

    batch = trainer.buffer.sample(1)  # the only row
    catalog = ModelCatalog(MODELS)
    expected_obs = observe(transition.observation, SIM, catalog)
    expected_next = observe(transition.next_observation, SIM, catalog)
    shapes = ObservationSpec.from_config(SIM).shapes
    for key, shape in shapes.items():
        assert batch.obs[key].shape == (1, *shape)
        np.testing.assert_array_equal(batch.obs[key], expected_obs[key])
        np.testing.assert_array_equal(batch.next_obs[key], expected_next[key])
    # 3 live servers, a policy built for 4: the missing one is shown busy, never idle.
    assert shapes["servers"][0] == 4 and len(transition.observation.servers) == 3
    assert batch.action.shape == (1, SIM.action_dim)
    np.testing.assert_allclose(batch.action[0], transition.action, rtol=1e-6)
    assert batch.reward[0] == pytest.approx(transition.reward, rel=1e-6)
    assert batch.done[0] == 0.0  # truncated is bootstrapped from its real s'


def test_a_terminal_transition_is_stored_done(tmp_path: Path) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path))
    trainer.add_transition(random_transition(np.random.default_rng(2), done=True))
    assert trainer.buffer.sample(1).done[0] == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"obs_spec_version": OBS_SPEC_VERSION + 1}, "obs_spec_version"),
        ({"action": (0.5,) * (SIM.action_dim - 1)}, "action has"),
        ({"reward": math.nan}, "finite"),
        ({"reward": 1e30}, r"reward 1e\+30 outside \[-25, 35\]"),
        ({"reward": -1e30}, "outside"),
        ({"reward": 36.0}, "outside"),
        (
            {
                "observation": dataclasses.replace(
                    random_snapshot(np.random.default_rng(0)), queue=(UNKNOWN_MODEL,)
                )
            },
            "model",
        ),
    ],
)
def test_invalid_transitions_are_refused(tmp_path: Path, changes: dict, message: str) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path))
    with pytest.raises(InvalidTransition, match=message):
        trainer.add_transition(random_transition(np.random.default_rng(3), **changes))
    assert len(trainer.buffer) == 0 and trainer.counters.transitions == 0


def test_rewards_across_the_reward_functions_range_are_stored(tmp_path: Path) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path))
    assert trainer.reward_bounds == (-25.0, 35.0)  # [-10, 20] widened by half its width
    for i, reward in enumerate((-10.0, 0.0, 20.0, 34.9)):
        assert trainer.add_transition(
            random_transition(np.random.default_rng(i), step_index=i, reward=reward)
        )


def test_a_redelivered_transition_is_stored_once(tmp_path: Path) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path))
    transition = random_transition(np.random.default_rng(4), "ep-a", 5)
    assert trainer.add_transition(transition)
    assert not trainer.add_transition(transition)
    assert trainer.add_transition(dataclasses.replace(transition, episode_id="ep-b"))
    assert len(trainer.buffer) == 2 and trainer.counters.duplicates == 1


# ----- updates -----------------------------------------------------------------------------------------
def test_updates_start_after_warm_up_and_change_the_weights(tmp_path: Path) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path, warmup_transitions=8, updates_per_transition=0.5))
    fill(trainer, 7)
    assert trainer.updates_owed == 0 and trainer.maybe_update(10).updates == 0
    before = weights(trainer)

    fill(trainer, 5, seed=1)  # transitions 8..12 are past warm-up: 5 x 0.5 = 2.5 updates owed
    assert trainer.updates_owed == 2
    first = trainer.maybe_update(1)
    assert (first.updates, first.owed) == (1, 1) and first.last is not None
    assert math.isfinite(first.last.critic_loss) and math.isfinite(first.last.actor_loss)
    assert trainer.maybe_update(10).updates == 1 and trainer.counters.updates == 2

    after = weights(trainer)
    for name in ("actor", "encoder", "critic"):
        changed = [key for key in before if key.startswith(name) and not torch.equal(before[key], after[key])]
        assert changed, f"no {name} weight changed"


def test_the_time_budget_bounds_one_round(tmp_path: Path) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path, warmup_transitions=1))
    fill(trainer, 6)
    done = trainer.maybe_update(100, time_budget_s=0.0)
    assert done.updates == 1 and done.owed == 5  # at least one, then the budget is spent


# ----- evaluation and promotion ------------------------------------------------------------------------
def test_a_winning_candidate_is_promoted_to_a_loadable_checkpoint(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, min_improvement=-1e9)
    trainer = trained(config)
    assert trainer.evaluation_due
    result, promotion = trainer.evaluate_and_promote()

    assert result.promote and promotion is not None and not trainer.evaluation_due
    assert result.seeds == (500, 501) and result.episodes == 2 and result.serving_version == 0
    assert result.serving_policy == "reuse" and "N=4" in result.settings
    reuse = evaluate_policy("reuse", EVAL_SIM, result.seeds)  # the same numbers, measured independently
    assert result.serving_utility == pytest.approx(reuse.utility.mean)
    assert math.isfinite(result.candidate_utility) and math.isfinite(result.diff_ci95)

    assert promotion.version == 1 and promotion.directory == (config.policy_dir / "v000001").resolve()
    assert [p.name for p in config.policy_dir.iterdir()] == ["v000001"]  # no partial directory left
    policy = make_policy(f"checkpoint:{promotion.directory}", SIM)
    rng = np.random.default_rng(9)
    snapshot = random_snapshot(rng, servers=4, tasks=4)
    obs = observe(snapshot, SIM, ModelCatalog(MODELS))
    np.testing.assert_array_equal(policy.act(obs), trainer.candidate().policy(SIM).act(obs))
    decision = LiveScheduler(policy, SIM, ModelCatalog(MODELS)).decide(snapshot)
    assert len(decision.action) == SIM.action_dim
    assert not decision.execute or decision.task_id in {t.task_id for t in snapshot.queue}

    # The promoted policy is the new baseline: the next promotion is version 2, judged against it.
    assert trainer.serving.version == 1 and trainer.serving.policy == f"checkpoint:{promotion.directory}"
    fill(trainer, 4, seed=5)
    trainer.maybe_update(100)
    second, promoted_again = trainer.evaluate_and_promote()
    assert second.serving_version == 1 and promoted_again is not None and promoted_again.version == 2
    assert trainer.counters.promotions == 2 and trainer.counters.evaluations == 2


def test_a_candidate_that_does_not_beat_the_serving_policy_is_not_promoted(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, min_improvement=1e9)
    trainer = trained(config)
    result, promotion = trainer.evaluate_and_promote()
    assert promotion is None and not result.promote
    assert math.isfinite(result.candidate_utility) and math.isfinite(result.serving_utility)
    assert not config.policy_dir.exists() and trainer.serving.version == 0
    assert trainer.counters.evaluations == 1 and trainer.counters.last_candidate_utility is not None
    assert trainer.serving.utilities == result.serving_utilities  # measured once per serving version


def test_a_restart_recovers_the_serving_version_and_what_was_not_announced(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, min_improvement=-1e9)
    trainer = trained(config)
    _, promotion = trainer.evaluate_and_promote()
    assert promotion is not None

    restarted = OnlineTrainer.start(config)
    assert restarted.serving.version == 1 and restarted.serving.policy == f"checkpoint:{promotion.directory}"
    pending = restarted.unannounced()  # never announced: the service publishes it again at start
    assert pending is not None and pending.version == 1 and pending.directory == promotion.directory
    assert pending.evaluation.candidate_utility == pytest.approx(promotion.evaluation.candidate_utility)
    restarted.announced(pending)
    assert restarted.unannounced() is None


def test_a_promoted_checkpoint_initialises_a_new_trainer(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, min_improvement=-1e9)
    trainer = trained(config)
    _, promotion = trainer.evaluate_and_promote()
    assert promotion is not None
    other = tiny_config(tmp_path / "other", init_checkpoint=promotion.directory)
    started = OnlineTrainer.start(other)
    original, loaded = weights(trainer), weights(started)
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[key], loaded[key]) for key in original)


# ----- persistence -------------------------------------------------------------------------------------
def test_save_and_reload_restore_buffer_weights_and_counters(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    trainer = trained(config, transitions=20)
    trainer.save(tmp_path / "state")
    trainer.save(tmp_path / "state")  # a second save replaces the first whole
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["trainer"]

    resumed = OnlineTrainer.start(config, tmp_path / "state")
    assert len(resumed.buffer) == len(trainer.buffer) == 20
    original, loaded = weights(trainer), weights(resumed)
    assert all(torch.equal(original[key], loaded[key]) for key in original)
    assert resumed.counters == trainer.counters and resumed.counters.updates > 0
    for name, optimizer in trainer.optimizers.named().items():
        saved_moments = [s["exp_avg"] for s in optimizer.state_dict()["state"].values()]
        loaded_moments = [
            s["exp_avg"] for s in resumed.optimizers.named()[name].state_dict()["state"].values()
        ]
        assert all(torch.equal(a, b) for a, b in zip(saved_moments, loaded_moments, strict=True))
    # The recent keys came back too: a transition stored before the save is still a duplicate.
    assert not resumed.add_transition(random_transition(np.random.default_rng(0), "ep", 0))


def test_a_state_saved_for_another_agent_is_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    trained(config).save(tmp_path / "state")
    bigger_batches = dataclasses.replace(config, agent=dataclasses.replace(config.agent, batch_size=32))
    assert len(OnlineTrainer.start(bigger_batches, tmp_path / "state").buffer) == 12  # shapes no weight
    wider = dataclasses.replace(config, agent=dataclasses.replace(config.agent, hidden=32))
    with pytest.raises(CheckpointError, match="agent"):
        OnlineTrainer.start(wider, tmp_path / "state")
