"""LAD-TS: the action prior's keys and EMA, the chain started from it, a tiny training run that stores
(s, a, prior, r, s', prior'), and checkpoints that keep the prior for resuming and serving."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from policy_models.checkpoints import load_checkpoint, restore_modules, save_checkpoint
from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.evaluation import evaluate, first_episodes
from policy_models.learning.agents import Agent, AgentConfig, build_agent
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.prior import (
    EMPTY_SLOT,
    FEASIBLE_SLOT,
    REUSABLE_SLOT,
    SLOT_CLASSES,
    WAITING_SLOT,
    ActionPrior,
)
from policy_models.learning.sac import build_optimizers
from policy_models.learning.train import (
    Progress,
    TrainResult,
    TrainSettings,
    checkpoint_config,
    new_buffer,
    resume,
    train,
)
from policy_models.nets import as_tensors
from policy_models.obs import (
    G_IDX,
    GLOBAL_FEATURES,
    SERVER_FEATURES,
    T_IDX,
    TASK_FEATURES,
    Observation,
    ObservationSpec,
)
from policy_models.policies.learned import LearnedPolicy
from policy_models.sim.batched import BatchedClusterSim

torch.set_num_threads(1)

CFG = paper_config(4, 0.05)
TINY = AgentConfig(
    algorithm="lad-ts",
    hidden=32,
    score_hidden=16,
    d_model=16,
    attention_ff=32,
    diffusion_steps=3,
    batch_size=64,
    updates_per_step=0.25,
    buffer_capacity=4096,
    prior_decay=0.9,
)
N_ENVS, WARMUP = 8, 64


def visited_observations(
    cfg: SimConfig, steps: int = 12, n_envs: int = 8, seed: int = 0
) -> list[Observation]:
    """Observations along random-action trajectories: busy, idle, empty and full queues."""
    sim = BatchedClusterSim(cfg, list(range(seed, seed + n_envs)))
    rng = np.random.default_rng(seed)
    observations = [sim.reset()]
    for _ in range(steps):
        observations.append(sim.step(rng.uniform(-1, 1, (n_envs, cfg.action_dim))).obs)
    return observations


def handmade_obs(idle_frac: float, queue_len: float, slots: list[tuple[bool, bool, bool]]) -> Observation:
    """One observation with the given globals and (valid, feasible, reusable) task slots."""
    tasks = np.zeros((1, len(slots), len(TASK_FEATURES)), dtype=np.float32)
    for j, flags in enumerate(slots):
        tasks[0, j, [T_IDX["valid"], T_IDX["feasible"], T_IDX["reusable"]]] = flags
    glob = np.zeros((1, len(GLOBAL_FEATURES)), dtype=np.float32)
    glob[0, G_IDX["idle_frac"]], glob[0, G_IDX["queue_len"]] = idle_frac, queue_len
    return {
        "servers": np.zeros((1, 4, len(SERVER_FEATURES)), dtype=np.float32),
        "tasks": tasks,
        "globals": glob,
    }


def lad_ts_agent(cfg: SimConfig = CFG) -> Agent:
    return build_agent(TINY, ObservationSpec.from_config(cfg), seed=0)


def fill_prior(prior: ActionPrior, value: float = 0.8) -> None:
    """A prior far from 0, with a different value per entry."""
    with torch.no_grad():
        for table in (prior.decision_table, prior.score_table):
            table.copy_(torch.linspace(-value, value, table.numel()).view_as(table))


# ----- keys ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        paper_config(4, 0.05),
        paper_config(8, 0.1, visible_queue=4),
        paper_config(12, 0.15, visible_queue=16),
        warm_config(8, 0.1),
    ],
    ids=["n4q10", "n8q4", "n12q16", "warm8"],
)
def test_bucket_keys_are_deterministic_in_range_and_q_free(cfg: SimConfig) -> None:
    prior = ActionPrior()
    q = cfg.visible_queue
    buckets = []
    for obs in visited_observations(cfg):
        bucket, slots = prior.bucket(obs), prior.slot_class(obs)
        assert bucket.shape == (N_ENVS,) and bucket.dtype == np.int64
        assert ((bucket >= 0) & (bucket < prior.n_buckets)).all()
        assert slots.shape == (N_ENVS, q) and ((slots >= 0) & (slots < SLOT_CLASSES)).all()
        copy = {key: value.copy() for key, value in obs.items()}
        np.testing.assert_array_equal(prior.bucket(copy), bucket)
        assert prior.prior(obs).shape == (N_ENVS, 2 + q)
        buckets.extend(bucket.tolist())
    assert len(set(buckets)) > 1  # the key separates the states a trajectory visits


def test_the_bucket_key_is_the_documented_one() -> None:
    prior = ActionPrior()  # idle edges (0, .25, .5), queue edges (0, .5, 1): 4 x 4 x 2 buckets
    assert prior.n_buckets == 32
    empty = (False, False, False)
    assert prior.bucket(handmade_obs(0.0, 0.0, [empty] * 3)).item() == 0
    assert prior.bucket(handmade_obs(0.25, 0.0, [empty])).item() == (1 * 4 + 0) * 2  # 1/4 idle: bin 1
    assert prior.bucket(handmade_obs(0.75, 1.5, [empty])).item() == (3 * 4 + 3) * 2  # overflowing queue
    slots = [(True, False, False), (True, True, False), (True, True, True), empty]
    obs = handmade_obs(0.5, 1.0, slots)
    assert prior.bucket(obs).item() == (2 * 4 + 2) * 2 + 1  # a reusable task is visible
    assert prior.slot_class(obs).tolist() == [[WAITING_SLOT, FEASIBLE_SLOT, REUSABLE_SLOT, EMPTY_SLOT]]


# ----- the EMA ------------------------------------------------------------------------------------
def test_update_moves_each_seen_key_toward_the_batch_mean_by_exactly_one_minus_decay() -> None:
    decay = 0.9
    prior = ActionPrior(decay=decay)
    fill_prior(prior, 0.5)
    slots = [(True, True, False), (True, False, False), (False, False, False)]
    obs = handmade_obs(0.25, 0.5, slots)
    obs = {key: np.concatenate([value, value]) for key, value in obs.items()}  # two rows, one bucket
    mean_action = np.array([[0.9, -0.3, 0.7, 0.2, 0.4], [0.5, 0.1, -0.1, 0.6, 0.8]], dtype=np.float32)
    bucket = prior.bucket(obs)[0]
    decision_before, scores_before = prior.decision_table.clone(), prior.score_table.clone()

    prior.update(obs, mean_action)

    batch_mean = torch.as_tensor(mean_action.astype(np.float64).mean(axis=0), dtype=torch.float32)
    moved = prior.decision_table[bucket] - decision_before[bucket]
    torch.testing.assert_close(moved, (1 - decay) * (batch_mean[:2] - decision_before[bucket]))
    for slot, cls in enumerate((FEASIBLE_SLOT, WAITING_SLOT)):
        moved = prior.score_table[bucket, cls] - scores_before[bucket, cls]
        expected = (1 - decay) * (batch_mean[2 + slot] - scores_before[bucket, cls])
        torch.testing.assert_close(moved, expected)
    # Untouched: other buckets, other slot classes, and empty slots (module docs).
    others = torch.arange(prior.n_buckets) != bucket
    assert torch.equal(prior.decision_table[others], decision_before[others])
    assert torch.equal(prior.score_table[others], scores_before[others])
    for cls in (EMPTY_SLOT, REUSABLE_SLOT):
        assert prior.score_table[bucket, cls] == scores_before[bucket, cls]
    assert prior.decision_updates[bucket] == 1 and prior.decision_updates.sum() == 1
    assert prior.score_updates[bucket].tolist() == [0, 1, 1, 0]
    # The prior a row reads back is its bucket's decision entry and its slots' score entries.
    read = prior.prior(obs)[0]
    np.testing.assert_array_equal(read[:2], prior.decision_table[bucket].numpy())
    slot_entries = prior.score_table[bucket, [FEASIBLE_SLOT, WAITING_SLOT, EMPTY_SLOT]]
    np.testing.assert_array_equal(read[2:], slot_entries.numpy())


def test_update_refuses_a_mean_action_of_the_wrong_width() -> None:
    obs = handmade_obs(0.0, 0.0, [(True, True, False)] * 3)
    with pytest.raises(ValueError, match="mean_action"):
        ActionPrior().update(obs, np.zeros((1, 4), dtype=np.float32))


# ----- the actor's chain from the prior -----------------------------------------------------------
def test_the_chain_from_a_prior_differs_from_noise_and_is_reproducible_when_deterministic() -> None:
    agent = lad_ts_agent()
    fill_prior(agent.prior)
    obs = visited_observations(CFG, steps=3)[-1]
    start = torch.from_numpy(agent.prior.prior(obs))
    with torch.no_grad():
        state = agent.encoder(as_tensors(obs))
        _, _, from_prior = agent.actor(state, generator=torch.Generator().manual_seed(0), prior=start)
        _, _, from_noise = agent.actor(state, generator=torch.Generator().manual_seed(0))
        _, _, fixed_a = agent.actor(state, deterministic=True, prior=start)
        _, _, fixed_b = agent.actor(state, deterministic=True, prior=start.clone())
        _, _, from_zero = agent.actor(state, deterministic=True)
    assert not torch.allclose(from_prior, from_noise)
    assert torch.equal(fixed_a, fixed_b)
    assert not torch.allclose(fixed_a, from_zero)  # the prior is what the chain starts from


# ----- the replay buffer --------------------------------------------------------------------------
def test_a_buffer_with_priors_samples_saves_and_loads_them(tmp_path: Path) -> None:
    spec = ObservationSpec.from_config(CFG)
    buffer = ReplayBuffer(spec.shapes, CFG.action_dim, capacity=24, seed=0, with_priors=True)
    obs = visited_observations(CFG, steps=1)
    rng = np.random.default_rng(0)
    for step in range(4):  # 32 rows into 24: the ring wraps
        prior, next_prior = rng.uniform(-1, 1, (2, N_ENVS, CFG.action_dim)).astype(np.float32)
        action = np.full((N_ENVS, CFG.action_dim), step, dtype=np.float32)
        buffer.add(obs[0], action, np.zeros(N_ENVS), obs[1], np.zeros(N_ENVS), prior, next_prior)
    with pytest.raises(ValueError, match="with_priors=True"):
        buffer.add(obs[0], action, np.zeros(N_ENVS), obs[1], np.zeros(N_ENVS))
    batch = buffer.sample(16)
    assert batch.prior is not None and batch.next_prior is not None
    assert batch.prior.shape == batch.next_prior.shape == (16, CFG.action_dim)

    buffer.save(tmp_path)
    loaded = ReplayBuffer.load(tmp_path)
    order = buffer._chronological()
    assert loaded.with_priors and len(loaded) == 24
    np.testing.assert_array_equal(loaded._prior[:24], buffer._prior[order])
    np.testing.assert_array_equal(loaded._next_prior[:24], buffer._next_prior[order])


def test_other_buffers_take_no_priors() -> None:
    buffer = ReplayBuffer(ObservationSpec.from_config(CFG).shapes, CFG.action_dim, capacity=8)
    obs = visited_observations(CFG, steps=1)
    prior = np.zeros((N_ENVS, CFG.action_dim), dtype=np.float32)
    with pytest.raises(ValueError, match="with_priors=False"):
        buffer.add(obs[0], prior, np.zeros(N_ENVS), obs[1], np.zeros(N_ENVS), prior, prior)
    assert buffer._prior.size == 0


# ----- config -------------------------------------------------------------------------------------
def test_only_lad_ts_configs_carry_the_prior_fields() -> None:
    eat = dataclasses.replace(TINY, algorithm="eat").to_dict()
    assert not any(name.startswith("prior_") for name in eat)  # earlier checkpoints still resume
    lad_ts = TINY.to_dict()
    assert lad_ts["prior_decay"] == 0.9 and lad_ts["prior_idle_edges"] == (0.0, 0.25, 0.5)
    round_trip = {k: list(v) if isinstance(v, tuple) else v for k, v in lad_ts.items()}  # as JSON
    assert AgentConfig.from_dict(round_trip) == TINY
    with pytest.raises(ValueError, match="prior_decay"):
        dataclasses.replace(TINY, prior_decay=1.0)


# ----- training, checkpoints, serving ---------------------------------------------------------------
@pytest.fixture(scope="module")
def lad_ts_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("lad_ts_run")
    settings = TrainSettings(
        sim=CFG,
        agent=TINY,
        total_steps=304,
        n_envs=N_ENVS,
        seed=3,
        out_dir=out,
        warmup_steps=WARMUP,
        eval_every=0,
        eval_seeds=(500,),
        checkpoint_every=0,
        log_every=64,
        progress=False,
    )
    return train(settings)


def run_settings(out_dir: Path, **changes: object) -> TrainSettings:
    values: dict[str, object] = dict(sim=CFG, agent=TINY, n_envs=N_ENVS, seed=3, out_dir=out_dir)
    return TrainSettings(**(values | changes))  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_tiny_lad_ts_run_has_finite_losses_and_stores_its_priors(lad_ts_run: TrainResult) -> None:
    assert lad_ts_run.env_steps == 304 and lad_ts_run.updates > 0
    assert math.isfinite(lad_ts_run.final_eval_utility)
    rows = lad_ts_run.csv_path.read_text().splitlines()
    for name in ("loss/critic", "loss/actor", "train/prior_buckets_seen"):
        values = [float(row.split(",")[2]) for row in rows if row.split(",")[1] == name]
        assert values and all(math.isfinite(v) for v in values), name

    stored = safetensors.numpy.load_file(str(lad_ts_run.final_checkpoint / "buffer_0" / "buffer.safetensors"))
    prior, next_prior = stored["prior"], stored["next_prior"]
    assert prior.shape == next_prior.shape == (304, CFG.action_dim)
    # The prior starts at 0 and warm-up does not move it: the first step after warm-up still starts
    # from 0, later ones from a prior the policy's mean actions have moved.
    assert not prior[: WARMUP + N_ENVS].any() and not next_prior[:WARMUP].any()
    assert np.abs(prior[WARMUP + N_ENVS :]).max() > 0
    # One simulator: the prior a step starts from is the prior' its previous step stored.
    np.testing.assert_array_equal(prior[N_ENVS:], next_prior[:-N_ENVS])


def test_resume_restores_the_prior_exactly(lad_ts_run: TrainResult, tmp_path: Path) -> None:
    settings = run_settings(tmp_path, resume_from=lad_ts_run.out_dir)
    agent = build_agent(TINY, ObservationSpec.from_config(CFG), seed=99)
    _, _, buffers = resume(settings, agent, build_optimizers(agent), [new_buffer(CFG, settings, 0)])
    states, saved = load_checkpoint(lad_ts_run.final_checkpoint)
    assert agent.prior is not None and saved["modules"]["prior"]["config"] == agent.prior.config()
    for key, tensor in agent.prior.state_dict().items():
        assert torch.equal(tensor, states["prior"][key]), key
    assert agent.prior.decision_updates.sum() > 0
    assert buffers[0].with_priors and len(buffers[0]) == 304


def test_a_saved_prior_round_trips_exactly(tmp_path: Path) -> None:
    agent = lad_ts_agent()
    for obs in visited_observations(CFG, steps=4):
        agent.prior.update(obs, np.random.default_rng(0).uniform(-1, 1, (N_ENVS, CFG.action_dim)))
    save_checkpoint(tmp_path, agent.modules(), checkpoint_config(run_settings(tmp_path), Progress()))
    assert not any(p.suffix in {".pkl", ".pt", ".pth"} for p in tmp_path.iterdir())
    restored = build_agent(TINY, ObservationSpec.from_config(CFG), seed=1)
    states, _ = load_checkpoint(tmp_path)
    restore_modules(restored.modules(), states)
    for key, tensor in agent.prior.state_dict().items():
        assert torch.equal(restored.prior.state_dict()[key], tensor), key


def test_a_lad_ts_checkpoint_serves_a_deterministic_policy_from_its_prior(lad_ts_run: TrainResult) -> None:
    policy = LearnedPolicy.from_checkpoint(lad_ts_run.out_dir, CFG)
    assert policy.prior is not None
    states, _ = load_checkpoint(lad_ts_run.out_dir / "best")
    frozen = {key: tensor.clone() for key, tensor in policy.prior.state_dict().items()}
    assert all(torch.equal(frozen[key], states["prior"][key]) for key in frozen)

    obs = visited_observations(CFG, steps=5)[-1]
    action = policy.act(obs)
    np.testing.assert_array_equal(policy.act(obs), action)
    with torch.no_grad():
        start = torch.from_numpy(policy.prior.prior(obs))
        _, _, expected = policy.actor(policy.encoder(as_tensors(obs)), deterministic=True, prior=start)
    np.testing.assert_array_equal(action, expected.clamp(-1, 1).numpy())

    name = f"checkpoint:{lad_ts_run.out_dir}"
    assert evaluate([name], [CFG], seeds=(1000,)) == evaluate([name], [CFG], seeds=(1000,))
    # Evaluating this very policy twice gives one result: it reads the prior and never updates it.
    assert first_episodes(policy, CFG, (1001,)) == first_episodes(policy, CFG, (1001,))
    assert all(torch.equal(tensor, frozen[key]) for key, tensor in policy.prior.state_dict().items())
