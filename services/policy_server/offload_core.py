"""Offloading rounds served by the policy server, as plain data: the round a caller sends (users and
servers by id), what makes one valid, the plan that comes back, and the planner that decides it with
the offloading policies of `policy_models.offload`. No gRPC and no protobuf here: `offload.py`
converts at the edge.

A round becomes an `Instance` as `model.make_instance` builds one: the timing constants of
`OffloadConfig` with the batch cost fitted to the measured batch speedup (where measured), and the
accuracy curve of the measured split curve, refitted for the round's step count. The policy's
`Assignment` (user and server indices) becomes a plan by id.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_models.offload.model import (
    Assignment,
    Batch,
    Instance,
    OffloadConfig,
    default_config,
    fit_accuracy_curve,
    shipped_measurement,
    validate,
)
from policy_models.offload.net import WEIGHTS_DIR
from policy_models.offload.policies import NETWORK_POLICIES, POLICY_NAMES, OffloadPolicy, make_policy

# Bounds on one round's work: a placement scores every candidate of every user (N x K x batches), so
# an unbounded round could hold a worker for minutes.
MAX_USERS = 512
MAX_SERVERS = 64
MAX_STEPS = 1000
# optimal_assignment refuses larger rounds (3^N work per server); say so before trying.
OPTIMAL_MAX_USERS = 12
DIGEST_CHARS = 16  # of a learned policy's weights digest, its version


class InvalidOffloadRound(ValueError):
    """A round no policy can decide; the message names every offending field."""


# ----- the round and its plan --------------------------------------------------------------------------
@dataclass(frozen=True)
class OffloadUser:
    """One request of the round and its owner's preferences (eat.v1.OffloadUser)."""

    user_id: str
    latency_weight: float  # accuracy given up per second of latency
    device_steps_per_s: float


@dataclass(frozen=True)
class OffloadServer:
    """One edge server holding the base model (eat.v1.OffloadServer)."""

    server_id: str
    availability: float  # in (0, 1]


@dataclass(frozen=True)
class OffloadRound:
    """Users arriving together, the servers that may serve them, and how to decide."""

    users: tuple[OffloadUser, ...]
    servers: tuple[OffloadServer, ...]
    steps: int
    policy_name: str = ""  # empty: the server's default policy
    max_batch: int = 0  # 0: the server's batch limit

    @classmethod
    def from_instance(cls, instance: Instance, policy_name: str = "", max_batch: int = 0) -> OffloadRound:
        """The round of an instance, users named user-<i> and servers server-<k> by index."""
        users = tuple(
            OffloadUser(f"user-{i}", float(lam), float(speed))
            for i, (lam, speed) in enumerate(zip(instance.latency_weight, instance.device_speed, strict=True))
        )
        servers = tuple(OffloadServer(f"server-{k}", float(a)) for k, a in enumerate(instance.availability))
        return cls(users, servers, instance.steps, policy_name, max_batch)


@dataclass(frozen=True)
class Placement:
    """Where one user runs: its device (no server_id, split_step 0) or batch `batch_index` of a server,
    leaving the edge after `split_step` steps."""

    user_id: str
    server_id: str = ""
    batch_index: int = 0
    split_step: int = 0

    @property
    def local(self) -> bool:
        return not self.server_id


@dataclass(frozen=True)
class PlannedBatch:
    """Users stepping together on the base model for `split_step` steps."""

    user_ids: tuple[str, ...]
    split_step: int


@dataclass(frozen=True)
class ServerPlan:
    """One server's batches in the order it runs them."""

    server_id: str
    batches: tuple[PlannedBatch, ...]


@dataclass(frozen=True)
class RoundPlan:
    """A decided round: a placement per user (in the round's order) and each server's batches."""

    placements: tuple[Placement, ...]
    servers: tuple[ServerPlan, ...]

    def to_assignment(self, offload_round: OffloadRound) -> Assignment:
        """The plan by user and server index, as the policies give it."""
        index = {u.user_id: i for i, u in enumerate(offload_round.users)}
        local = tuple(sorted(index[p.user_id] for p in self.placements if p.local))
        servers = tuple(
            tuple(Batch(tuple(index[u] for u in b.user_ids), b.split_step) for b in s.batches)
            for s in self.servers
        )
        return Assignment(local, servers)


def plan_of(offload_round: OffloadRound, assignment: Assignment) -> RoundPlan:
    """The plan by id of an assignment of the round's instance."""
    user_ids = [u.user_id for u in offload_round.users]
    placements = {i: Placement(user_id) for i, user_id in enumerate(user_ids)}
    servers = []
    for server, batches in zip(offload_round.servers, assignment.servers, strict=True):
        for m, batch in enumerate(batches):
            for i in batch.users:
                placements[i] = Placement(user_ids[i], server.server_id, m, batch.split)
        planned = tuple(PlannedBatch(tuple(user_ids[i] for i in b.users), b.split) for b in batches)
        servers.append(ServerPlan(server.server_id, planned))
    return RoundPlan(tuple(placements[i] for i in range(len(user_ids))), tuple(servers))


# ----- validation --------------------------------------------------------------------------------------
def round_problems(offload_round: OffloadRound, max_batch: int) -> Iterator[str]:
    """What makes the round undecidable, each naming its field (as in eat.v1.OffloadRequest)."""
    yield from _count_problems("users", len(offload_round.users), MAX_USERS)
    yield from _count_problems("servers", len(offload_round.servers), MAX_SERVERS)
    yield from _id_problems("users", "user_id", [u.user_id for u in offload_round.users])
    yield from _id_problems("servers", "server_id", [s.server_id for s in offload_round.servers])
    for i, user in enumerate(offload_round.users):
        if not (math.isfinite(user.latency_weight) and user.latency_weight >= 0):
            yield f"users[{i}].latency_weight must be finite and >= 0, got {user.latency_weight}"
        if not (math.isfinite(user.device_steps_per_s) and user.device_steps_per_s > 0):
            yield f"users[{i}].device_steps_per_s must be finite and > 0, got {user.device_steps_per_s}"
    for k, server in enumerate(offload_round.servers):
        if not 0 < server.availability <= 1:  # also false for NaN
            yield f"servers[{k}].availability must be in (0, 1], got {server.availability}"
    if not 1 <= offload_round.steps <= MAX_STEPS:
        yield f"steps must be in 1..{MAX_STEPS}, got {offload_round.steps}"
    if not 0 <= offload_round.max_batch <= max_batch:
        yield f"max_batch must be in 0..{max_batch} (0 = {max_batch}), got {offload_round.max_batch}"


def _count_problems(field_name: str, count: int, most: int) -> Iterator[str]:
    if count == 0:
        yield f"{field_name}: a round needs at least one"
    elif count > most:
        yield f"{field_name}: at most {most} per round, got {count}"


def _id_problems(field_name: str, id_name: str, ids: Sequence[str]) -> Iterator[str]:
    for i, value in enumerate(ids):
        if not value:
            yield f"{field_name}[{i}].{id_name} is empty"
    repeated = sorted(v for v, n in Counter(ids).items() if v and n > 1)
    if repeated:
        yield f"{field_name}: repeated {id_name}s {repeated}"


# ----- the planner -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OffloadDecision:
    """A plan and the policy that decided it."""

    plan: RoundPlan
    policy_name: str
    policy_version: str  # "sha256:<digest start>" of a learned policy's weights; empty for a rule
    decided_at: float  # epoch seconds


def accuracy_for_steps(measurement: Mapping[str, Any], steps: int) -> np.ndarray:
    """a(s), s = 0..steps, fitted to a measurement taken at its own step count. Splits are rescaled by
    steps / measured steps: what the personal model keeps depends on the share of the denoising done
    on the base model, not on the step count. At the measured count this is `curve_from_measurement`."""
    scale = steps / int(measurement["steps"])
    points = measurement["points"]
    splits = [float(p["split"]) * scale for p in points]
    accuracies = [float(p["clip"]) * float(p["personal"]) for p in points]
    # Rescaled splits are fractional; the fit only uses them as hinge positions, which may be any real.
    values = fit_accuracy_curve(splits, accuracies, steps).array()
    values.flags.writeable = False  # shared by every round of this step count
    return values


def weights_version(name: str, weights_dir: Path = WEIGHTS_DIR) -> str:
    """A learned policy's version: the start of its weights file's SHA-256; empty for a rule."""
    if name not in NETWORK_POLICIES:
        return ""
    digest = hashlib.sha256((weights_dir / f"{name}.safetensors").read_bytes()).hexdigest()
    return f"sha256:{digest[:DIGEST_CHARS]}"


@dataclass
class OffloadPlanner:
    """Every offloading policy, loaded once, and the round -> instance -> plan path around them.
    Deciding keeps no state between rounds (the curve cache only grows), so rounds may be decided on
    several threads at once."""

    policies: Mapping[str, OffloadPolicy]
    versions: Mapping[str, str]
    default_policy: str
    measurement: Mapping[str, Any]
    config: OffloadConfig = field(default_factory=OffloadConfig)
    clock: Callable[[], float] = time.time
    _curves: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, default_policy: str, weights_dir: Path = WEIGHTS_DIR) -> OffloadPlanner:
        """All policies with their weights read now; raises if any does not load (a server that
        cannot decide must not start)."""
        policies = {name: make_policy(name, weights_dir) for name in POLICY_NAMES}
        versions = {name: weights_version(name, weights_dir) for name in POLICY_NAMES}
        if default_policy not in policies:
            raise KeyError(f"unknown offloading policy {default_policy!r}")
        measurement = shipped_measurement()
        return cls(policies, versions, default_policy, measurement, default_config())

    def decide(self, offload_round: OffloadRound) -> OffloadDecision:
        """The named (or default) policy's plan; raises InvalidOffloadRound."""
        name = self.check(offload_round)
        instance = self.instance(offload_round)
        assignment = self.policies[name].solve(instance)
        validate(instance, assignment)  # a plan that drops or repeats a user must never leave the server
        return OffloadDecision(plan_of(offload_round, assignment), name, self.versions[name], self.clock())

    def check(self, offload_round: OffloadRound) -> str:
        """The policy to decide with; raises InvalidOffloadRound naming every problem."""
        name = offload_round.policy_name or self.default_policy
        problems = [
            *round_problems(offload_round, self.config.max_batch),
            *self._policy_problems(name, len(offload_round.users)),
        ]
        if problems:
            raise InvalidOffloadRound("invalid offload request: " + "; ".join(problems))
        return name

    def _policy_problems(self, name: str, n_users: int) -> Iterator[str]:
        if name not in self.policies:
            yield f"policy_name: unknown offloading policy {name!r}; known: {', '.join(self.policies)}"
        elif name == "optimal" and n_users > OPTIMAL_MAX_USERS:
            yield f"users: the optimal policy decides at most {OPTIMAL_MAX_USERS}, got {n_users}"

    def instance(self, offload_round: OffloadRound) -> Instance:
        cfg = self.config
        return Instance(
            latency_weight=_read_only([u.latency_weight for u in offload_round.users]),
            device_speed=_read_only([u.device_steps_per_s for u in offload_round.users]),
            availability=_read_only([s.availability for s in offload_round.servers]),
            accuracy=self.accuracy(offload_round.steps),
            edge_step_s=cfg.edge_step_s,
            beta=cfg.beta,
            transfer_s=cfg.transfer_s,
            adapter_load_s=cfg.adapter_load_s,
            max_batch=offload_round.max_batch or cfg.max_batch,
        )

    def accuracy(self, steps: int) -> np.ndarray:
        # Fitted once per step count; at worst two threads fit the same one, and either result is it.
        if steps not in self._curves:
            self._curves[steps] = accuracy_for_steps(self.measurement, steps)
        return self._curves[steps]


def _read_only(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array.flags.writeable = False
    return array
