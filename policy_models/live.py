"""The live cluster as the services see it, and the one path from it to the policy and back.

The aggregator keeps servers and queued tasks by name (server ids, task ids, model names); policies
were built for the simulator's indexed world. This module is the bridge, shared by the aggregator and
the policy server so both read a snapshot the same way:

    Snapshot --cluster_view--> ClusterView --encode_one--> Observation --policy.act--> action
    action --decode--> Decision (execute?, which task, steps) --select_servers--> gang of server ids

The live cluster follows the simulator's `warm` mode: executors keep several models resident and any
gang whose members all hold the model starts without a load. Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from policy_models.config import SimConfig, warm_config
from policy_models.obs import MAX_MODELS, ClusterView, Observation, ObservationSpec, batch_of_one, encode_one
from policy_models.policies.base import Policy
from policy_models.selector import choose_task, decode_execute, decode_steps, select_gang_warm

# A server that is down or missing from a snapshot shorter than the policy's cluster size is shown as
# busy for this long, so no policy counts on it.
ABSENT_REMAINING_S = 1_000.0


@dataclass(frozen=True)
class ServerInfo:
    """One executor as the scheduler sees it."""

    server_id: str
    idle: bool
    remaining_s: float = 0.0  # seconds until its task finishes (model time)
    resident_models: tuple[str, ...] = ()
    speed: float = 1.0
    group_id: int = 0
    group_size: int = 0


@dataclass(frozen=True)
class TaskInfo:
    """One queued task as the scheduler sees it."""

    task_id: str
    waiting_s: float
    patches: int
    model: str
    min_steps: int | None = None  # QoS step bounds (None = the system's)
    max_steps: int | None = None
    min_quality: float = 0.0
    priority: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The scheduling state at one decision epoch (the domain twin of eat.v1.ClusterSnapshot)."""

    now_s: float  # model seconds since the start of the current episode window
    servers: tuple[ServerInfo, ...]  # up servers, sorted by id
    queue: tuple[TaskInfo, ...]  # visible queued tasks, oldest first
    total_queued: int
    arrived: int = 0  # tasks accepted in the current episode window
    launched: int = 0  # tasks launched in the current episode window


@dataclass(frozen=True)
class Decision:
    """A decoded action: wait, or start `task_id` with `steps` denoising steps."""

    execute: bool
    task_id: str = ""
    steps: int = 0
    slot: int = -1  # index of the task in Snapshot.queue
    action: tuple[float, ...] = ()  # the raw action the policy gave


@dataclass(frozen=True)
class ModelCatalog:
    """Model names <-> the ids 1..MAX_MODELS the observation one-hot encodes."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names or len(self.names) > MAX_MODELS or len(set(self.names)) != len(self.names):
            raise ValueError(f"need 1..{MAX_MODELS} distinct model names, got {self.names}")

    def id_of(self, name: str) -> int:
        """1-based id; 0 for a model the catalogue does not know (it then has no one-hot column)."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            return 0


def live_config(
    n_servers: int,
    models: Sequence[str],
    models_per_server: int = 2,
    patch_choices: Sequence[int] | None = None,
    profile: str = "reference",
    arrival_rate: float = 0.1,
) -> SimConfig:
    """The warm-mode simulator config matching a live cluster (observation shapes, step range, the
    policy's cluster size). arrival_rate only matters to policies that simulate ahead."""
    choices = tuple(patch_choices or (k for k in (1, 2, 4, 8) if k <= n_servers))
    return warm_config(
        n_servers,
        arrival_rate,
        n_models=len(models),
        models_per_server=models_per_server,
        server_speeds=None,
        patch_choices=choices,
        profile_name=profile,
    )


def idle_holders(snapshot: Snapshot, model: str) -> int:
    return sum(1 for s in snapshot.servers if s.idle and model in s.resident_models)


def cluster_view(snapshot: Snapshot, cfg: SimConfig, catalog: ModelCatalog) -> ClusterView:
    """The simulator's view of a live snapshot: servers padded (or cut) to cfg.n_servers, the queue
    cut to the visible window. Tasks that need more servers than the cluster has are still shown."""
    servers = list(snapshot.servers[: cfg.n_servers])
    absent = cfg.n_servers - len(servers)
    visible = snapshot.queue[: cfg.visible_queue]
    return ClusterView(
        now=snapshot.now_s,
        idle=[s.idle for s in servers] + [False] * absent,
        remaining_s=[s.remaining_s for s in servers] + [ABSENT_REMAINING_S] * absent,
        group_size=[0] * cfg.n_servers,  # warm mode: loaded groups play no part
        speed=[s.speed for s in servers] + [1.0] * absent,
        resident=[_model_ids(s.resident_models, catalog) for s in servers] + [[] for _ in range(absent)],
        task_waiting_s=[t.waiting_s for t in visible],
        task_patches=[min(t.patches, cfg.max_patches) for t in visible],
        task_model=[catalog.id_of(t.model) for t in visible],
        task_reusable=[idle_holders(snapshot, t.model) >= t.patches for t in visible],
        # SLO classes (SimConfig.slo_classes): a task with a positive priority is interactive (class 0).
        task_class=[0 if t.priority > 0 else 1 for t in visible] if cfg.slo_classes is not None else None,
        n_waiting=snapshot.total_queued,
        n_arrived=snapshot.arrived,
        n_launched=snapshot.launched,
    )


def _model_ids(names: Sequence[str], catalog: ModelCatalog) -> list[int]:
    return [i for i in (catalog.id_of(n) for n in names) if i]


def observe(snapshot: Snapshot, cfg: SimConfig, catalog: ModelCatalog) -> Observation:
    """The policy's observation of a snapshot, batched (B = 1)."""
    return batch_of_one(encode_one(cluster_view(snapshot, cfg, catalog), _spec(cfg)))


@lru_cache(maxsize=16)
def _spec(cfg: SimConfig) -> ObservationSpec:
    return ObservationSpec.from_config(cfg)


def candidates(snapshot: Snapshot, cfg: SimConfig) -> list[bool]:
    """Visible tasks that could start now: enough idle servers (the simulator's rule)."""
    n_idle = sum(s.idle for s in snapshot.servers)
    return [t.patches <= n_idle for t in snapshot.queue[: cfg.visible_queue]]


def decode(action: np.ndarray | Sequence[float], snapshot: Snapshot, cfg: SimConfig) -> Decision:
    """The shared decoding (selector): execute > 0 starts the best-scoring candidate; steps map
    linearly onto [min_steps, max_steps], then into the task's own QoS step bounds."""
    values = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if values.shape[0] != cfg.action_dim or not np.all(np.isfinite(values)):
        raise ValueError(f"action must be {cfg.action_dim} finite numbers, got {values.shape[0]}")
    raw = tuple(float(v) for v in values)
    if not decode_execute(raw[0]):
        return Decision(False, action=raw)
    slot = choose_task(raw[2:], candidates(snapshot, cfg))
    if slot < 0:
        return Decision(False, action=raw)
    task = snapshot.queue[slot]
    steps = decode_steps(raw[1], cfg.min_steps, cfg.max_steps)
    steps = min(max(steps, task.min_steps or cfg.min_steps), task.max_steps or cfg.max_steps)
    return Decision(True, task.task_id, steps, slot, raw)


@dataclass(frozen=True)
class Placement:
    """The servers chosen for a task and whether they all hold its model already."""

    server_ids: tuple[str, ...]
    reused: bool


def select_servers(task: TaskInfo, servers: Sequence[ServerInfo], models_per_server: int) -> Placement | None:
    """Warm-mode gang choice (selector.select_gang_warm) over live servers: holders of the model
    first, fastest first, then servers with a free model slot; None when too few are idle."""
    if not servers:
        return None
    gang = select_gang_warm(
        task.patches,
        [s.idle for s in servers],
        [task.model in s.resident_models for s in servers],
        [len(s.resident_models) < models_per_server for s in servers],
        [s.speed for s in servers],
    )
    if gang is None:
        return None
    return Placement(tuple(servers[n].server_id for n in gang.members), gang.reused)


class LiveScheduler:
    """A policy acting on live snapshots: observation in, decision out (one at a time)."""

    def __init__(self, policy: Policy, cfg: SimConfig, catalog: ModelCatalog, seed: int = 0) -> None:
        self.policy, self.cfg, self.catalog = policy, cfg, catalog
        self.policy.prepare()
        self.policy.begin(1, seed)

    @property
    def name(self) -> str:
        return self.policy.name

    def decide(self, snapshot: Snapshot) -> Decision:
        action = self.policy.act(observe(snapshot, self.cfg, self.catalog))[0]
        return decode(action, snapshot, self.cfg)


def snapshot_from_view(view: ClusterView, catalog: ModelCatalog, visible_queue: int) -> Snapshot:
    """A live snapshot of a simulated cluster state (servers edge-<n>, tasks t<slot>): benchmarks and
    tests feed the live path with the simulator's states."""
    servers = tuple(
        ServerInfo(
            server_id=f"edge-{n}",
            idle=view.idle[n],
            remaining_s=view.remaining_s[n],
            resident_models=tuple(catalog.names[m - 1] for m in view.resident[n]),
            speed=view.speed[n],
        )
        for n in range(len(view.idle))
    )
    queue = tuple(
        TaskInfo(f"t{j}", view.task_waiting_s[j], view.task_patches[j], catalog.names[view.task_model[j] - 1])
        for j in range(min(len(view.task_patches), visible_queue))
    )
    return Snapshot(view.now, servers, queue, view.n_waiting, view.n_arrived, view.n_launched)
