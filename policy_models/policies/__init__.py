"""Scheduling policies. `make_policy(name, config)` builds any of them by name."""

from __future__ import annotations

from collections.abc import Callable

from policy_models.config import SimConfig
from policy_models.policies.base import Policy
from policy_models.policies.deadline import EarliestDeadlinePolicy
from policy_models.policies.heuristics import FifoPolicy, GreedyPolicy, RandomPolicy, ReuseAwarePolicy
from policy_models.policies.metaheuristics import GeneticPolicy, HarmonySearchPolicy
from policy_models.policies.tuned import tuned_reuse

_FACTORIES: dict[str, Callable[[SimConfig], Policy]] = {
    "random": RandomPolicy,
    "fifo": FifoPolicy,
    "greedy": GreedyPolicy,
    "reuse": ReuseAwarePolicy,
    "edf": EarliestDeadlinePolicy,
    "harmony": HarmonySearchPolicy,
    "genetic": GeneticPolicy,
}


# Policies named "<prefix><argument>", e.g. "checkpoint:<dir>" for a trained agent.
_PREFIX_FACTORIES: dict[str, Callable[[str, SimConfig], Policy]] = {}


def register(name: str, factory: Callable[[SimConfig], Policy]) -> None:
    _FACTORIES[name] = factory


def register_prefix(prefix: str, factory: Callable[[str, SimConfig], Policy]) -> None:
    _PREFIX_FACTORIES[prefix] = factory


def _learned_from_checkpoint(directory: str, config: SimConfig) -> Policy:
    # Imported here so that torch loads only when a learned policy is asked for.
    from policy_models.policies.learned import LearnedPolicy

    return LearnedPolicy.from_checkpoint(directory, config)


def _shipped(row: str, config: SimConfig) -> Policy:
    from policy_models.policies.learned import LearnedPolicy
    from policy_models.shipped import shipped_for

    chosen = shipped_for(row, config)
    policy = LearnedPolicy.from_checkpoint(chosen.directory, config)
    policy.name = f"shipped:{row}"
    return policy


register_prefix("checkpoint:", _learned_from_checkpoint)
# "reuse:<suite>": the reuse heuristic with its knobs re-tuned for that suite (`eat tune`).
register_prefix("reuse:", tuned_reuse)
# "shipped:<row>": the policy shipped in policy_models/checkpoints/ for that results row, picked by the
# config's cluster size and mode (policy_models.shipped).
register_prefix("shipped:", _shipped)


# The hand-written and search-based policies: the baselines a learned policy is set against ("the best
# heuristic" of a setting is the one of these with the best mean utility there).
HEURISTIC_POLICIES = ("random", "fifo", "greedy", "reuse", "edf", "harmony", "genetic")


def is_heuristic(name: str) -> bool:
    """One of HEURISTIC_POLICIES, or the reuse heuristic re-tuned for a suite ("reuse:<suite>")."""
    return name in HEURISTIC_POLICIES or name.startswith("reuse:")


def policy_serves(name: str, config: SimConfig) -> bool:
    """Whether `name` can act on `config`: a "shipped:<row>" policy only where one of that row's
    checkpoints was trained for the cluster's size and mode; every other policy everywhere."""
    if not name.startswith("shipped:"):
        return True
    from policy_models.shipped import shipped_policies

    row = name.removeprefix("shipped:")
    return any(p.row == row and p.serves(config) for p in shipped_policies())


def policy_names() -> list[str]:
    return list(_FACTORIES)


def is_known_policy(name: str) -> bool:
    """A registered name, or one with a registered prefix (its argument is checked when it is built)."""
    return name in _FACTORIES or any(name.startswith(prefix) for prefix in _PREFIX_FACTORIES)


def make_policy(name: str, config: SimConfig) -> Policy:
    """A registered policy by name, else a prefixed one ("checkpoint:<dir>")."""
    if name in _FACTORIES:
        return _FACTORIES[name](config)
    for prefix, factory in _PREFIX_FACTORIES.items():
        if name.startswith(prefix):
            return factory(name.removeprefix(prefix), config)
    raise ValueError(
        f"unknown policy {name!r}; known: {policy_names()} or a prefix {sorted(_PREFIX_FACTORIES)}"
    )


__all__ = [
    "HEURISTIC_POLICIES",
    "Policy",
    "is_heuristic",
    "is_known_policy",
    "make_policy",
    "policy_names",
    "policy_serves",
    "register",
    "register_prefix",
]
