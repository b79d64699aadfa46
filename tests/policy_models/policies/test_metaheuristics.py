"""Harmony Search and the Genetic Algorithm: paper settings, elitism, determinism, and that act() replays
exactly the sequence whose fitness the search measured."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.evaluation import DEFAULT_SEED_BASE, first_episodes
from policy_models.policies import make_policy
from policy_models.policies.metaheuristics import (
    SEQUENCE_LENGTH,
    GeneticPolicy,
    GeneticSettings,
    HarmonySearchPolicy,
    HarmonySettings,
    SearchBudget,
    SequencePolicy,
    sequence_fitness,
)
from policy_models.sim.batched import BatchedClusterSim

CFG = paper_config(4, 0.05)
BUDGET = SearchBudget(train_seeds=3)
SMALL_GA = GeneticSettings(population=10, generations=6, parents=4)
SMALL_HS = HarmonySettings(improvisations=12, memory=6)


def small_genetic(cfg: SimConfig = CFG, seed: int = 0) -> GeneticPolicy:
    return GeneticPolicy(cfg, seed=seed, budget=BUDGET, settings=SMALL_GA)


def small_harmony(cfg: SimConfig = CFG, seed: int = 0) -> HarmonySearchPolicy:
    return HarmonySearchPolicy(cfg, seed=seed, budget=BUDGET, settings=SMALL_HS)


@pytest.fixture(scope="module")
def genetic() -> GeneticPolicy:
    policy = small_genetic()
    policy.prepare()
    return policy


@pytest.fixture(scope="module")
def harmony() -> HarmonySearchPolicy:
    policy = small_harmony()
    policy.prepare()
    return policy


def test_registered_with_the_paper_settings() -> None:
    genetic, harmony = make_policy("genetic", CFG), make_policy("harmony", CFG)
    assert isinstance(genetic, GeneticPolicy) and isinstance(harmony, HarmonySearchPolicy)
    assert genetic.settings == GeneticSettings(64, 32, 10, 1.0, 0.1, 1)
    assert harmony.settings == HarmonySettings(64, 64, 0.8, 0.2, 1.0)
    assert genetic.budget.sequence_length == harmony.budget.sequence_length == SEQUENCE_LENGTH == 2048
    assert min(genetic.budget.seeds()) > DEFAULT_SEED_BASE + 1000, "training seeds avoid evaluation seeds"


def test_genetic_best_fitness_never_decreases(genetic: GeneticPolicy) -> None:
    history = genetic.history
    assert len(history) == SMALL_GA.generations + 1
    assert history == sorted(history)


def test_harmony_best_fitness_never_decreases(harmony: HarmonySearchPolicy) -> None:
    history = harmony.history
    assert len(history) == SMALL_HS.improvisations + 1
    assert history == sorted(history)


@pytest.mark.parametrize("build", [small_genetic, small_harmony])
def test_search_is_deterministic_for_a_seed(build: Callable[..., SequencePolicy]) -> None:
    first, again, other = build(seed=5), build(seed=5), build(seed=6)
    for policy in (first, again, other):
        policy.prepare()
    np.testing.assert_array_equal(first.sequence, again.sequence)
    assert first.history == again.history
    assert not np.array_equal(first.sequence, other.sequence)


@pytest.mark.parametrize("fixture", ["genetic", "harmony"])
def test_sequence_is_in_range_and_replays_to_its_fitness(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    policy: SequencePolicy = request.getfixturevalue(fixture)
    assert policy.sequence is not None
    assert policy.sequence.shape == (SEQUENCE_LENGTH, CFG.action_dim)
    assert (np.abs(policy.sequence) <= 1.0).all()
    seeds = BUDGET.seeds()
    policy.begin(len(seeds), seeds[0])
    episodes = first_episodes(policy, CFG, seeds)
    assert np.mean([e.total_reward for e in episodes]) == pytest.approx(policy.history[-1])


def test_fitness_scores_each_sequence_on_every_training_seed() -> None:
    rng = np.random.default_rng(0)
    sequences = rng.uniform(-1, 1, (3, 50, CFG.action_dim))
    seeds = [10_000, 10_001]
    together = sequence_fitness(CFG, sequences, seeds)
    alone = [sequence_fitness(CFG, s[None], seeds)[0] for s in sequences]
    np.testing.assert_allclose(together, alone)
    never = np.full((1, 50, CFG.action_dim), -1.0)  # never executes: every episode earns nothing
    assert sequence_fitness(CFG, never, seeds)[0] == 0.0


def test_each_environment_replays_from_its_own_counter() -> None:
    cfg = warm_config(4, 0.1)
    policy = small_harmony(cfg)
    policy.sequence = np.linspace(-1, 1, 5)[:, None] * np.ones((5, cfg.action_dim))
    obs = BatchedClusterSim(cfg, [1, 2, 3]).reset()
    policy.begin(3, 0)
    rows = [policy.act(obs)[:, 0] for _ in range(2)]
    policy.episodes_ended(np.array([1]))
    rows += [policy.act(obs)[:, 0] for _ in range(5)]
    seq = policy.sequence[:, 0]
    np.testing.assert_allclose(rows[0], seq[[0, 0, 0]])
    np.testing.assert_allclose(rows[2], seq[[2, 0, 2]])  # env 1 started a new episode
    np.testing.assert_allclose(rows[-1], seq[[4, 4, 4]])  # past the end, the last row repeats
    policy.begin(3, 0)
    np.testing.assert_allclose(policy.act(obs)[:, 0], seq[[0, 0, 0]])
