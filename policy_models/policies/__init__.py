"""Scheduling policies. `make_policy(name, config)` builds any of them by name."""

from __future__ import annotations

from collections.abc import Callable

from policy_models.config import SimConfig
from policy_models.policies.base import Policy
from policy_models.policies.heuristics import FifoPolicy, GreedyPolicy, RandomPolicy, ReuseAwarePolicy
from policy_models.policies.metaheuristics import GeneticPolicy, HarmonySearchPolicy

_FACTORIES: dict[str, Callable[[SimConfig], Policy]] = {
    "random": RandomPolicy,
    "fifo": FifoPolicy,
    "greedy": GreedyPolicy,
    "reuse": ReuseAwarePolicy,
    "harmony": HarmonySearchPolicy,
    "genetic": GeneticPolicy,
}


def register(name: str, factory: Callable[[SimConfig], Policy]) -> None:
    _FACTORIES[name] = factory


def policy_names() -> list[str]:
    return list(_FACTORIES)


def make_policy(name: str, config: SimConfig) -> Policy:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {policy_names()}") from None
    return factory(config)


__all__ = ["Policy", "make_policy", "policy_names", "register"]
