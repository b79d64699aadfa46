"""The policy server's pure core: which policy serves, how an update replaces it, what a valid
snapshot is. No gRPC, no broker: the server module wraps these functions in I/O.

A `ServingPolicy` is immutable and complete (its scheduler is built and prepared); the server holds one
reference to the current one and replaces it whole, so a decision always sees one policy and the
version that goes with it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from policy_models.config import SimConfig
from policy_models.live import Decision, LiveScheduler, ModelCatalog, Snapshot, live_config
from policy_models.obs import OBS_SPEC_VERSION
from policy_models.policies import make_policy
from services.policy_server.settings import PolicySettings

CHECKPOINT_PREFIX = "checkpoint:"
INITIAL_LEARNED_VERSION = 1  # a checkpoint given at start; updates must be newer
NON_LEARNED_VERSION = 0


class InvalidSnapshot(ValueError):
    """A snapshot no policy can act on; the message names what is wrong."""


class UpdateRefused(Exception):
    """A policy update that must not replace the serving policy."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # a short fixed word, used as a metrics label
        self.reason = reason


@dataclass(frozen=True)
class ServingPolicy:
    """A loaded policy and its identity, replaced as one unit."""

    scheduler: LiveScheduler
    version: int
    name: str  # "reuse", "greedy", ... or the algorithm of a learned policy ("eat")
    algorithm: str = ""  # empty for non-learned policies
    checkpoint_uri: str = ""  # empty for non-learned policies
    obs_spec_version: int = OBS_SPEC_VERSION
    loaded_at: float = 0.0  # epoch seconds

    def decide(self, snapshot: Snapshot) -> Decision:
        check_snapshot(snapshot)
        return self.scheduler.decide(snapshot)


@dataclass(frozen=True)
class PolicyUpdate:
    """The domain twin of eat.v1.PolicyUpdated: what the server needs of a promotion."""

    version: int
    checkpoint_uri: str
    algorithm: str
    obs_spec_version: int


# ----- building policies -----------------------------------------------------------------------------
def scheduler_config(settings: PolicySettings) -> SimConfig:
    return live_config(settings.nodes, settings.models, settings.models_per_server, profile=settings.profile)


def load_initial(settings: PolicySettings, clock: Callable[[], float] = time.time) -> ServingPolicy:
    """The policy named in the settings. Errors propagate: a server that cannot load its policy at
    start must not start."""
    if settings.policy.startswith(CHECKPOINT_PREFIX):
        uri = settings.policy.removeprefix(CHECKPOINT_PREFIX)
        return _learned(settings, uri, INITIAL_LEARNED_VERSION, algorithm="", loaded_at=clock())
    scheduler = _scheduler(settings, settings.policy)
    return ServingPolicy(scheduler, NON_LEARNED_VERSION, settings.policy, loaded_at=clock())


def load_update(
    serving: ServingPolicy,
    update: PolicyUpdate,
    settings: PolicySettings,
    clock: Callable[[], float] = time.time,
) -> ServingPolicy:
    """The policy an update promotes, fully built; raises UpdateRefused (serving stays) when the update
    is for another observation spec, not newer than the serving version, or its checkpoint does not
    load for this cluster."""
    if update.obs_spec_version != OBS_SPEC_VERSION:
        raise UpdateRefused(
            "obs_spec",
            f"update v{update.version} was trained on observation spec v{update.obs_spec_version}, "
            f"this server encodes v{OBS_SPEC_VERSION}",
        )
    if update.version <= serving.version:
        raise UpdateRefused(
            "stale", f"update v{update.version} is not newer than the serving v{serving.version}"
        )
    try:
        return _learned(settings, update.checkpoint_uri, update.version, update.algorithm, clock())
    except Exception as err:  # any failure to load leaves the serving policy in place
        raise UpdateRefused(
            "checkpoint", f"update v{update.version}: cannot load {update.checkpoint_uri!r}: {err}"
        ) from err


def _learned(
    settings: PolicySettings, uri: str, version: int, algorithm: str, loaded_at: float
) -> ServingPolicy:
    # Imported here: torch loads only when a learned policy is served.
    import torch

    from policy_models.learning.agents import checkpoint_algorithm

    torch.set_num_threads(1)  # one decision at a time; more threads only add contention
    path = checkpoint_path(uri)
    scheduler = _scheduler(settings, f"{CHECKPOINT_PREFIX}{path}")
    algorithm = algorithm or checkpoint_algorithm(path)
    return ServingPolicy(scheduler, version, algorithm, algorithm, uri, OBS_SPEC_VERSION, loaded_at)


def _scheduler(settings: PolicySettings, policy_name: str) -> LiveScheduler:
    cfg = scheduler_config(settings)
    return LiveScheduler(make_policy(policy_name, cfg), cfg, ModelCatalog(settings.models), settings.seed)


def checkpoint_path(uri: str) -> Path:
    """The directory of a checkpoint URI: a plain path or file://[localhost]/path."""
    if not uri:
        raise ValueError("empty checkpoint URI")
    parsed = urlparse(uri)
    if not parsed.scheme:
        return Path(uri)
    if parsed.scheme != "file":
        raise ValueError(f"unsupported checkpoint URI scheme {parsed.scheme!r} (use a path or file://)")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file URI on another host ({parsed.netloc!r}) is not reachable here")
    return Path(unquote(parsed.path))


# ----- validating snapshots --------------------------------------------------------------------------
def check_snapshot(snapshot: Snapshot) -> None:
    """Raise InvalidSnapshot naming every problem that would make a decision meaningless."""
    problems = list(snapshot_problems(snapshot))
    if problems:
        raise InvalidSnapshot("invalid snapshot: " + "; ".join(problems))


def snapshot_problems(snapshot: Snapshot) -> Iterator[str]:
    if not snapshot.servers:
        yield "no servers (a decision needs at least one server that is up)"
    if not _non_negative(snapshot.now_s):
        yield f"now_s must be a finite number >= 0, got {snapshot.now_s}"
    yield from _duplicates("server_id", [s.server_id for s in snapshot.servers])
    yield from _duplicates("task_id", [t.task_id for t in snapshot.queue])
    for s in snapshot.servers:
        if not _non_negative(s.remaining_s):
            yield f"server {s.server_id!r}: remaining_s must be finite and >= 0, got {s.remaining_s}"
        if not (math.isfinite(s.speed) and s.speed > 0):
            yield f"server {s.server_id!r}: speed_factor must be > 0, got {s.speed}"
    for t in snapshot.queue:
        if t.patches < 1:
            yield f"task {t.task_id!r}: patches must be >= 1, got {t.patches}"
        if not _non_negative(t.waiting_s):
            yield f"task {t.task_id!r}: waiting_s must be finite and >= 0, got {t.waiting_s}"
        if t.min_steps is not None and t.max_steps is not None and t.min_steps > t.max_steps:
            yield f"task {t.task_id!r}: qos.min_steps {t.min_steps} > qos.max_steps {t.max_steps}"


def _duplicates(field: str, values: list[str]) -> Iterator[str]:
    if any(not v for v in values):
        yield f"empty {field}"
    repeated = sorted(v for v, n in Counter(values).items() if v and n > 1)
    if repeated:
        yield f"repeated {field}s {repeated}"


def _non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0
