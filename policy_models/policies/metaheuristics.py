"""Metaheuristic baselines of the EAT paper (VI-A2): Harmony Search and a Genetic Algorithm.

Both optimise ONE open-loop action sequence offline, in `prepare()`: decision i of every episode plays
row i of the sequence whatever the state. Fitness is the mean total reward of the first episode on a few
training workloads (seeds disjoint from evaluation), simulated with `BatchedClusterSim`, a whole
population in one batch. An episode takes at most `max_decisions` (and in practice about a hundred)
decisions, so only that prefix of the 2048 rows affects fitness; evaluation stops when every episode
has ended, which keeps it cheap.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import Observation
from policy_models.policies.base import Policy
from policy_models.sim.batched import BatchedClusterSim

SEQUENCE_LENGTH = 2048  # decisions per optimised sequence (paper VI-A2)
TRAIN_SEED_BASE = 10_000  # training workloads: seeds 10_000, 10_001, ... (evaluation uses 1000+)


@dataclass(frozen=True)
class SearchBudget:
    """What the optimisers see: how many training workloads, how long a sequence."""

    train_seeds: int = 8
    sequence_length: int = SEQUENCE_LENGTH

    def seeds(self) -> list[int]:
        return [TRAIN_SEED_BASE + i for i in range(self.train_seeds)]


def sequence_fitness(cfg: SimConfig, sequences: np.ndarray, seeds: list[int]) -> np.ndarray:
    """(P,) mean total reward of the first episode of each workload in `seeds` when it plays
    sequences[p] (P, L, action_dim) open loop, one decision per row (the last row repeats past L).

    All P x len(seeds) episodes run in one batch; environments whose first episode has ended keep
    stepping (the simulator resets them) but no longer count.
    """
    n_seq, length, _ = sequences.shape
    n_envs = n_seq * len(seeds)
    owner = np.repeat(np.arange(n_seq), len(seeds))
    sim = BatchedClusterSim(cfg, seeds * n_seq)
    sim.reset()
    decision = np.zeros(n_envs, dtype=np.int64)
    total = np.zeros(n_envs)
    running = np.ones(n_envs, dtype=bool)
    # Every episode is truncated after max_decisions, so the loop ends within that many steps.
    for _ in range(cfg.max_decisions + 1):
        result = sim.step(sequences[owner, np.minimum(decision, length - 1)])
        total += np.where(running, result.reward, 0.0)
        decision += 1
        running[result.finished_envs] = False
        if not running.any():
            break
    return total.reshape(n_seq, len(seeds)).mean(1)


class SequencePolicy(Policy):
    """Replays one optimised action sequence in every environment, each from its own decision counter."""

    def __init__(self, config: SimConfig, seed: int = 0, budget: SearchBudget | None = None) -> None:
        super().__init__(config)
        self.seed = seed
        self.budget = budget or SearchBudget()
        self.sequence: np.ndarray | None = None  # (L, action_dim), set by prepare()
        self.history: list[float] = []  # best fitness so far, after the start and after each iteration
        self._decision = np.zeros(0, dtype=np.int64)

    def prepare(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.sequence, self.history = self._optimise(rng)

    @abstractmethod
    def _optimise(self, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
        """The best sequence found and the best-fitness history."""

    def _random_sequences(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(count, self.budget.sequence_length, self.cfg.action_dim))

    def _fitness(self, sequences: np.ndarray) -> np.ndarray:
        return sequence_fitness(self.cfg, sequences, self.budget.seeds())

    def begin(self, n_envs: int, seed: int) -> None:
        self._decision = np.zeros(n_envs, dtype=np.int64)

    def episodes_ended(self, envs: np.ndarray) -> None:
        self._decision[envs] = 0

    def act(self, obs: Observation) -> np.ndarray:
        if self.sequence is None:
            self.prepare()  # a caller that skipped prepare() still gets the optimised sequence
        assert self.sequence is not None
        b = obs["tasks"].shape[0]
        if self._decision.shape != (b,):
            self.begin(b, self.seed)
        rows = np.minimum(self._decision, len(self.sequence) - 1)
        self._decision += 1
        return self.sequence[rows].copy()


@dataclass(frozen=True)
class GeneticSettings:
    """Paper VI-A2: population 64, 32 generations, 10 parents, crossover 1, gene mutation 0.1, 1 elite."""

    population: int = 64
    generations: int = 32
    parents: int = 10
    crossover_prob: float = 1.0
    mutation_prob: float = 0.1
    elites: int = 1


class GeneticPolicy(SequencePolicy):
    """Genetic Algorithm over the flattened sequence (PyGAD-style operators): steady-state selection of
    the best `parents`, single-point crossover of consecutive parents, random mutation that adds
    uniform(-1, 1) to a gene (then clips to [-1, 1]), and the best `elites` carried over unchanged. Only
    new children are evaluated; fitness is deterministic, so the best fitness never decreases."""

    name = "genetic"

    def __init__(
        self,
        config: SimConfig,
        seed: int = 0,
        budget: SearchBudget | None = None,
        settings: GeneticSettings | None = None,
    ) -> None:
        super().__init__(config, seed, budget)
        self.settings = settings or GeneticSettings()

    def _optimise(self, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
        st = self.settings
        population = self._random_sequences(rng, st.population)
        fitness = self._fitness(population)
        history = [float(fitness.max())]
        for _ in range(st.generations):
            order = np.argsort(-fitness, kind="stable")
            parents = population[order[: st.parents]]
            children = self._mutate(rng, self._crossover(rng, parents, st.population - st.elites))
            population = np.concatenate([population[order[: st.elites]], children])
            fitness = np.concatenate([fitness[order[: st.elites]], self._fitness(children)])
            history.append(float(fitness.max()))
        return population[int(fitness.argmax())], history

    def _crossover(self, rng: np.random.Generator, parents: np.ndarray, count: int) -> np.ndarray:
        """Child i mixes parents i and i+1 (cyclically) at one random cut of the flattened genome."""
        n_parents = len(parents)
        flat = parents.reshape(n_parents, -1)
        first = flat[np.arange(count) % n_parents]
        second = flat[(np.arange(count) + 1) % n_parents]
        cut = rng.integers(1, flat.shape[1], size=count)
        cross = rng.random(count) < self.settings.crossover_prob
        take_second = cross[:, None] & (np.arange(flat.shape[1]) >= cut[:, None])
        return np.where(take_second, second, first).reshape(count, *parents.shape[1:])

    def _mutate(self, rng: np.random.Generator, children: np.ndarray) -> np.ndarray:
        mutate = rng.random(children.shape) < self.settings.mutation_prob
        step = rng.uniform(-1.0, 1.0, size=children.shape)
        return np.clip(np.where(mutate, children + step, children), -1.0, 1.0)


@dataclass(frozen=True)
class HarmonySettings:
    """Paper VI-A2: 64 improvisations, harmony memory 64, memory consideration 0.8, pitch adjustment
    0.2, bandwidth 1."""

    improvisations: int = 64
    memory: int = 64
    consider_prob: float = 0.8
    pitch_prob: float = 0.2
    bandwidth: float = 1.0


class HarmonySearchPolicy(SequencePolicy):
    """Harmony Search (Geem et al. 2001): each improvisation builds a new sequence gene by gene, from a
    random member of the harmony memory (probability `consider_prob`, then pitch-adjusted by
    bandwidth * uniform(-1, 1) with probability `pitch_prob`) or uniformly at random; it replaces the
    worst member when it is better. The memory is evaluated in one batch, improvisations one by one."""

    name = "harmony"

    def __init__(
        self,
        config: SimConfig,
        seed: int = 0,
        budget: SearchBudget | None = None,
        settings: HarmonySettings | None = None,
    ) -> None:
        super().__init__(config, seed, budget)
        self.settings = settings or HarmonySettings()

    def _optimise(self, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
        st = self.settings
        memory = self._random_sequences(rng, st.memory)
        fitness = self._fitness(memory)
        history = [float(fitness.max())]
        for _ in range(st.improvisations):
            harmony = self._improvise(rng, memory)
            score = self._fitness(harmony[None])[0]
            worst = int(fitness.argmin())
            if score > fitness[worst]:
                memory[worst], fitness[worst] = harmony, score
            history.append(float(fitness.max()))
        return memory[int(fitness.argmax())], history

    def _improvise(self, rng: np.random.Generator, memory: np.ndarray) -> np.ndarray:
        st = self.settings
        shape = memory.shape[1:]
        from_memory = rng.random(shape) < st.consider_prob
        member = rng.integers(0, len(memory), size=shape)
        remembered = np.take_along_axis(memory, member[None], axis=0)[0]
        pitch = from_memory & (rng.random(shape) < st.pitch_prob)
        remembered = remembered + pitch * st.bandwidth * rng.uniform(-1.0, 1.0, size=shape)
        fresh = rng.uniform(-1.0, 1.0, size=shape)
        return np.clip(np.where(from_memory, remembered, fresh), -1.0, 1.0)
