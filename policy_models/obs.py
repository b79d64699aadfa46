"""The observation: server tokens, task tokens and a few globals, normalised.

`encode` (a batched `RawView` of plain arrays) is the one place features are defined and scaled;
`encode_one` gives the same for one cluster (the live aggregator's route). The simulators, for speed,
gather whole token rows from `TokenTables`, which `encode` itself fills; tests hold their observations
equal to `encode` / `encode_one` bit for bit. Policies may read features back in seconds through
`ObservationSpec` (heuristics do), networks take the tokens. Batched arrays carry a leading batch
dimension B.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from policy_models import slo
from policy_models.config import SimConfig
from policy_models.profiles import TimingProfile

OBS_SPEC_VERSION = 1
MAX_MODELS = 8  # model ids 1..MAX_MODELS have a one-hot column
TIME_SCALE_S = 100.0  # seconds are divided by this

SERVER_FEATURES = (
    "idle",  # 1 when the server can start a task now
    "remaining",  # seconds until it finishes its task / TIME_SCALE_S (0 when idle)
    "group_size",  # paper mode: size of the intact loaded group it belongs to / max patches (0 = none)
    "in_idle_group",  # paper mode: 1 when it belongs to an intact group that is idle now
    "speed",  # speed factor (1 = the timing profile's speed)
    "resident_frac",  # models resident / slots per server
) + tuple(f"model_{m}" for m in range(1, MAX_MODELS + 1))  # resident (warm) or loaded (paper) models

TASK_FEATURES = (
    "valid",  # 1 when this queue slot holds a task
    "waiting",  # seconds since arrival / TIME_SCALE_S
    "patches",  # servers it needs / max patches
    "feasible",  # 1 when enough servers are idle to start it now
    "reusable",  # 1 when it can start now without loading its model
    "run_at_max",  # run time at the maximum steps on its gang size / TIME_SCALE_S
    "init_now",  # init seconds if started now (0 or group setup when reusable, else a load) / TIME_SCALE_S
) + tuple(f"model_{m}" for m in range(1, MAX_MODELS + 1))

# Appended to TASK_FEATURES when the config has SLO classes (SimConfig.slo_classes): whether the task is
# interactive (class 0, the tight SLO) and the seconds left until its deadline (negative once missed).
SLO_TASK_FEATURES = (
    "interactive",  # 1 for an interactive task (SLO class 0)
    "slack",  # (its class's response limit - waiting) / TIME_SCALE_S: time left to its deadline
)

GLOBAL_FEATURES = (
    "time",  # now / time limit
    "idle_frac",  # idle servers / servers
    "queue_len",  # waiting tasks / visible queue length (may exceed 1)
    "arrived_frac",  # tasks arrived so far / tasks per episode
    "launched_frac",  # tasks launched so far / tasks per episode
)

S_IDX = {name: i for i, name in enumerate(SERVER_FEATURES)}
T_IDX = {name: i for i, name in enumerate(TASK_FEATURES + SLO_TASK_FEATURES)}
G_IDX = {name: i for i, name in enumerate(GLOBAL_FEATURES)}
MODEL_COL_S = S_IDX["model_1"]
MODEL_COL_T = T_IDX["model_1"]

Observation = dict[str, np.ndarray]  # {"servers": (B,N,Fs), "tasks": (B,Q,Ft), "globals": (B,G)}


@dataclass
class RawView:
    """Unnormalised state at a decision epoch, batched. Filled by the simulators and the aggregator."""

    now: np.ndarray  # (B,)
    idle: np.ndarray  # (B,N) bool
    remaining_s: np.ndarray  # (B,N)
    group_size: np.ndarray  # (B,N) int, 0 = not in an intact group
    speed: np.ndarray  # (B,N)
    resident: np.ndarray  # (B,N,M) bool, column m-1 = model m is resident (loaded in its group in paper mode)
    task_valid: np.ndarray  # (B,Q) bool
    task_waiting_s: np.ndarray  # (B,Q)
    task_patches: np.ndarray  # (B,Q) int (0 in empty slots)
    task_model: np.ndarray  # (B,Q) int (0 in empty slots)
    task_reusable: np.ndarray  # (B,Q) bool
    n_waiting: np.ndarray  # (B,) int
    n_arrived: np.ndarray  # (B,) int
    n_launched: np.ndarray  # (B,) int
    # Optional: (B,N) resident-model slots per server; None = the spec's (`ObservationSpec.slots_of`).
    slots: np.ndarray | None = None
    # Optional: (B,Q) SLO class of each visible task (0 = interactive); None = all 0. Used only with
    # SLO classes (the spec's `class_limits`).
    task_class: np.ndarray | None = None
    # Optional: `static_task_tokens` of the visible tasks, already gathered (a producer that keeps them
    # per task avoids recomputing them at every decision). None = computed here.
    task_static: np.ndarray | None = None


@dataclass(frozen=True)
class ObservationSpec:
    """Shapes and scales of the observation for one cluster configuration."""

    n_servers: int
    visible_queue: int
    max_patches: int
    max_steps: int
    models_per_server: int
    tasks_per_episode: int
    time_limit_s: float
    warm: bool
    step_s: np.ndarray  # (max_patches+1,) seconds per step by gang size
    init_s: np.ndarray  # (max_patches+1,) load seconds by gang size
    group_setup_s: float
    # Resident-model slots of each server (all models_per_server unless the config says otherwise).
    server_slots: tuple[int, ...] = ()
    # (2, max_patches+1) response limit by SLO class and gang size when the config has SLO classes (the
    # task tokens then carry SLO_TASK_FEATURES); None otherwise.
    class_limits: np.ndarray | None = None
    version: int = OBS_SPEC_VERSION

    @classmethod
    def from_config(cls, cfg: SimConfig) -> ObservationSpec:
        if cfg.n_models > MAX_MODELS:
            raise ValueError(f"observation spec v{OBS_SPEC_VERSION} encodes at most {MAX_MODELS} models")
        profile: TimingProfile = cfg.profile
        step, init = profile.lookup_arrays(cfg.max_patches)
        return cls(
            n_servers=cfg.n_servers,
            visible_queue=cfg.visible_queue,
            max_patches=cfg.max_patches,
            max_steps=cfg.max_steps,
            models_per_server=cfg.models_per_server,
            tasks_per_episode=cfg.tasks_per_episode,
            time_limit_s=cfg.time_limit_s,
            warm=cfg.mode == "warm",
            step_s=np.nan_to_num(step),
            init_s=np.nan_to_num(init),
            group_setup_s=profile.group_setup_s,
            server_slots=cfg.slots,
            class_limits=None if cfg.slo_classes is None else slo.class_limits(cfg),
        )

    @property
    def task_width(self) -> int:
        """Features per task token: TASK_FEATURES, and SLO_TASK_FEATURES with SLO classes."""
        return len(TASK_FEATURES) + (len(SLO_TASK_FEATURES) if self.class_limits is not None else 0)

    @cached_property
    def run_at_max_norm(self) -> list[float]:
        """By gang size: run time at the maximum steps / TIME_SCALE_S (as in `encode`)."""
        return (self.step_s * (self.max_steps / TIME_SCALE_S)).tolist()

    @cached_property
    def init_norm(self) -> list[float]:
        return (self.init_s / TIME_SCALE_S).tolist()

    @cached_property
    def task_row_templates(self) -> dict[tuple[int, bool, int], list[float]]:
        """Task token rows by (patches, reusable, model), with waiting and feasible left at 0: the
        scalar encoder copies one and fills those two."""
        reuse_cost = (self.group_setup_s if self.warm else 0.0) / TIME_SCALE_S
        rows = {}
        for k in range(1, self.max_patches + 1):
            for model in range(0, MAX_MODELS + 1):  # 0: a model the catalogue does not know
                static = static_task_tokens(np.array(k), np.array(model), self).tolist()
                for reusable in (False, True):
                    row = list(static)
                    row[T_IDX["reusable"]] = float(reusable)
                    row[T_IDX["init_now"]] = reuse_cost if reusable else self.init_norm[k]
                    rows[k, reusable, model] = row
        return rows

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "servers": (self.n_servers, len(SERVER_FEATURES)),
            "tasks": (self.visible_queue, self.task_width),
            "globals": (len(GLOBAL_FEATURES),),
        }

    def slots_of(self, n_servers: int) -> np.ndarray:
        """(n_servers,) slots per server: the config's for its own cluster, else models_per_server each."""
        if len(self.server_slots) == n_servers:
            return np.asarray(self.server_slots, dtype=np.float64)
        return np.full(n_servers, float(self.models_per_server))

    def init_now_s(self, patches: np.ndarray, reusable: np.ndarray) -> np.ndarray:
        """Init seconds a task would pay if started now."""
        reuse_cost = self.group_setup_s if self.warm else 0.0
        return np.where(reusable, reuse_cost, self.init_s[patches])


def encode(raw: RawView, spec: ObservationSpec) -> Observation:
    """Normalised observation tokens from a raw view (columns in the *_FEATURES order)."""
    f32 = np.float32
    b, n = raw.idle.shape
    resident = raw.resident
    n_models = resident.shape[-1]
    servers = np.zeros((b, n, len(SERVER_FEATURES)), dtype=f32)
    servers[..., :MODEL_COL_S] = np.stack(
        [
            raw.idle,
            raw.remaining_s / TIME_SCALE_S,
            raw.group_size / spec.max_patches,
            (raw.group_size > 0) & raw.idle,
            raw.speed,
            np.count_nonzero(resident, axis=-1) / (spec.slots_of(n) if raw.slots is None else raw.slots),
        ],
        axis=-1,
        dtype=f32,
    )
    servers[..., MODEL_COL_S : MODEL_COL_S + n_models] = resident

    valid = raw.task_valid
    n_idle = raw.idle.sum(-1, keepdims=True)
    patches = raw.task_patches
    tasks = raw.task_static
    if tasks is None:
        tasks = static_task_tokens(patches, raw.task_model, spec)
    init_now = spec.init_now_s(patches, raw.task_reusable) * valid
    tasks[..., T_IDX["waiting"]] = raw.task_waiting_s / TIME_SCALE_S
    tasks[..., T_IDX["feasible"]] = valid & (patches <= n_idle)
    tasks[..., T_IDX["reusable"]] = raw.task_reusable
    tasks[..., T_IDX["init_now"]] = init_now / TIME_SCALE_S
    if spec.class_limits is not None:
        task_class = np.zeros_like(patches) if raw.task_class is None else raw.task_class
        tasks[..., T_IDX["interactive"]] = valid & (task_class == 0)
        limit = spec.class_limits[task_class, patches]
        tasks[..., T_IDX["slack"]] = np.where(valid, (limit - raw.task_waiting_s) / TIME_SCALE_S, 0.0)

    glob = np.stack(
        [
            raw.now / spec.time_limit_s,
            n_idle[:, 0] / n,
            raw.n_waiting / spec.visible_queue,
            raw.n_arrived / spec.tasks_per_episode,
            raw.n_launched / spec.tasks_per_episode,
        ],
        axis=-1,
        dtype=f32,
    )
    return {"servers": servers, "tasks": tasks, "globals": glob}


_MODEL_IDS = np.arange(1, MAX_MODELS + 1)


def static_task_tokens(patches: np.ndarray, model: np.ndarray, spec: ObservationSpec) -> np.ndarray:
    """The task-token columns fixed for a task's lifetime (valid, patches, run at max, model one-hot);
    the others are left 0. patches == 0 marks an empty slot (an all-zero row)."""
    tokens = np.zeros((*patches.shape, spec.task_width), dtype=np.float32)
    tokens[..., T_IDX["valid"]] = patches > 0
    tokens[..., T_IDX["patches"]] = patches / spec.max_patches
    tokens[..., T_IDX["run_at_max"]] = spec.step_s[patches] * (spec.max_steps / TIME_SCALE_S)
    tokens[..., MODEL_COL_T : MODEL_COL_T + MAX_MODELS] = (model[..., None] == _MODEL_IDS) & (
        patches[..., None] > 0
    )
    return tokens


@dataclass(frozen=True)
class TokenTables:
    """Every token row an observation can hold, but for its one continuous column, made by `encode`.

    A server token is the row for (server class, state, idle) with the remaining time written in, where a
    server's class is its speed and resident-model slots; a task token the row for (key, visible,
    reusable, feasible) with the waiting time written in. A task's key
    is patches * (n_models + 1) + model; a server's state is the key of the intact loaded group it
    belongs to (paper mode, 0 = none) or its resident models as bits (warm mode, bit m-1 = model m).
    The simulators build observations from these rows (one gather instead of a dozen feature writes);
    tests hold the result equal to `encode` and `encode_one` bit for bit.
    """

    # (codes, len(SERVER_FEATURES)) float32; code = (base + state) * 2 + idle
    server_rows: np.ndarray
    # (codes, len(TASK_FEATURES)) float32; code = key * 8 + visible * 4 + reusable * 2 + feasible
    task_rows: np.ndarray
    server_base: np.ndarray  # (N,) int64: server class * number of states
    keys_per_size: int
    # (N,) int64: the same for each server while it is slowed down (ServerFaults); = server_base without.
    slow_base: np.ndarray

    @staticmethod
    @cache
    def for_config(cfg: SimConfig) -> TokenTables:
        spec = ObservationSpec.from_config(cfg)
        server_rows, server_base, slow_base = _server_rows(cfg, spec)
        tables = TokenTables(server_rows, _task_rows(cfg, spec), server_base, cfg.n_models + 1, slow_base)
        for array in (tables.server_rows, tables.task_rows, tables.server_base, tables.slow_base):
            array.flags.writeable = False  # shared by every simulator of this config
        return tables


def _task_rows(cfg: SimConfig, spec: ObservationSpec) -> np.ndarray:
    per_size = cfg.n_models + 1
    codes = np.arange((cfg.max_patches + 1) * per_size * 8)
    key = codes // 8
    patches, model = key // per_size, key % per_size
    valid = (patches > 0) & (codes & 4 > 0)
    feasible = valid & (codes & 1 > 0)
    # `encode` derives feasibility from the idle count: all max_patches servers idle, or none.
    idle = np.broadcast_to(feasible[:, None], (codes.size, cfg.max_patches))
    raw = _raw_view_of_rows(
        idle=idle,
        n_models=cfg.n_models,
        task_valid=valid[:, None],
        task_patches=(patches * valid)[:, None],
        task_model=(model * valid)[:, None],
        task_reusable=(valid & (codes & 2 > 0))[:, None],
    )
    return encode(raw, spec)["tasks"][:, 0]


def _server_rows(cfg: SimConfig, spec: ObservationSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows by (server class, state, idle); a server's class is its (speed, slots) pair, and with
    ServerFaults its slowed-down speed makes a class too. Returns the rows and each server's base row
    index, normal and slowed."""
    speeds, slots = np.asarray(cfg.speeds, dtype=np.float64), np.asarray(cfg.slots, dtype=np.float64)
    slowed = speeds * (cfg.faults.slow_factor if cfg.faults is not None else 1.0)
    pairs = np.concatenate([np.stack([speeds, slots], 1), np.stack([slowed, slots], 1)])
    classes, server_class = np.unique(pairs, axis=0, return_inverse=True)
    server_class = server_class.reshape(-1)
    n = cfg.n_servers
    warm = cfg.mode == "warm"
    n_states = 1 << cfg.n_models if warm else (cfg.max_patches + 1) * (cfg.n_models + 1)
    codes = np.arange(classes.shape[0] * n_states * 2)
    idle, state, of_class = codes % 2 == 1, codes // 2 % n_states, classes[codes // 2 // n_states]
    speed, slots = of_class[:, 0], of_class[:, 1]
    model_ids = np.arange(1, cfg.n_models + 1)
    if warm:
        resident = (state[:, None] >> (model_ids - 1)) & 1 == 1
        group_size = np.zeros_like(state)
    else:
        resident = state[:, None] % (cfg.n_models + 1) == model_ids
        group_size = state // (cfg.n_models + 1)
    raw = _raw_view_of_rows(
        idle=idle[:, None],
        n_models=cfg.n_models,
        group_size=group_size[:, None],
        speed=speed[:, None],
        resident=resident[:, None, :],
    )
    raw.slots = slots[:, None]
    base = (server_class * n_states).astype(np.int64)
    return encode(raw, spec)["servers"][:, 0], base[:n], base[n:]


def _raw_view_of_rows(
    *,
    idle: np.ndarray,
    n_models: int,
    group_size: np.ndarray | None = None,
    speed: np.ndarray | None = None,
    resident: np.ndarray | None = None,
    task_valid: np.ndarray | None = None,
    task_patches: np.ndarray | None = None,
    task_model: np.ndarray | None = None,
    task_reusable: np.ndarray | None = None,
) -> RawView:
    """A RawView with one row per table entry: the given fields, zeros (ones for speed) elsewhere."""
    r, n = idle.shape
    q = 1 if task_valid is None else task_valid.shape[1]
    zeros_q = np.zeros((r, q), dtype=np.int64)
    zeros_r = np.zeros(r, dtype=np.int64)
    return RawView(
        now=np.zeros(r),
        idle=idle,
        remaining_s=np.zeros((r, n)),
        group_size=np.zeros((r, n), dtype=np.int64) if group_size is None else group_size,
        speed=np.ones((r, n)) if speed is None else speed,
        resident=np.zeros((r, n, n_models), dtype=bool) if resident is None else resident,
        task_valid=zeros_q > 0 if task_valid is None else task_valid,
        task_waiting_s=np.zeros((r, q)),
        task_patches=zeros_q if task_patches is None else task_patches,
        task_model=zeros_q if task_model is None else task_model,
        task_reusable=zeros_q > 0 if task_reusable is None else task_reusable,
        n_waiting=zeros_r,
        n_arrived=zeros_r,
        n_launched=zeros_r,
    )


def take(obs: Observation, index: int | np.ndarray | slice) -> Observation:
    """Rows of a batched observation."""
    return {key: value[index] for key, value in obs.items()}


def batch_of_one(obs: Observation) -> Observation:
    """A single environment's observation as a batch of one (what policies act on)."""
    return {key: value[None] for key, value in obs.items()}


def stack(observations: list[Observation]) -> Observation:
    """Single environments' observations as one batch, in order."""
    return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}


@dataclass
class ClusterView:
    """Unnormalised state of one cluster at a decision epoch, as plain lists.

    The single environment and the live aggregator fill this; `encode_one` turns it into the same
    observation `encode` makes from a batched `RawView` (tests hold the two to each other).
    """

    now: float
    idle: list[bool]  # per server
    remaining_s: list[float]
    group_size: list[int]  # 0 = not in an intact loaded group
    speed: list[float]
    resident: list[list[int]]  # per server: ids of the models it holds
    task_waiting_s: list[float]  # per visible task, queue order
    task_patches: list[int]
    task_model: list[int]
    task_reusable: list[bool]
    n_waiting: int
    n_arrived: int
    n_launched: int
    slots: list[int] | None = None  # per server; None = the spec's (`ObservationSpec.slots_of`)
    task_class: list[int] | None = None  # per visible task, SLO class (0 = interactive); None = all 0


def encode_one(view: ClusterView, spec: ObservationSpec) -> Observation:
    """Observation of one cluster (no batch dimension); same features and scales as `encode`.

    Values go into flat Python lists converted once: at this size that beats array arithmetic.
    """
    n, q = len(view.idle), spec.visible_queue
    n_idle = sum(view.idle)
    n_fs, n_ft = len(SERVER_FEATURES), spec.task_width
    slots = view.slots if view.slots is not None else spec.slots_of(n).tolist()
    servers = [0.0] * (n * n_fs)
    for i in range(n):
        models = view.resident[i]
        idle, size = view.idle[i], view.group_size[i]
        base = i * n_fs
        servers[base : base + MODEL_COL_S] = (
            idle,
            view.remaining_s[i] / TIME_SCALE_S,
            size / spec.max_patches,
            size > 0 and idle,
            view.speed[i],
            len(models) / slots[i],
        )
        for m in models:
            servers[base + MODEL_COL_S + m - 1] = 1.0
    templates = spec.task_row_templates
    tasks: list[float] = []
    waiting_col, feasible_col = T_IDX["waiting"], T_IDX["feasible"]
    for j, k in enumerate(view.task_patches):
        base = len(tasks)
        tasks += templates[k, view.task_reusable[j], view.task_model[j]]
        tasks[base + waiting_col] = view.task_waiting_s[j] / TIME_SCALE_S
        tasks[base + feasible_col] = k <= n_idle
        if spec.class_limits is not None:
            task_class = view.task_class[j] if view.task_class is not None else 0
            tasks[base + T_IDX["interactive"]] = float(task_class == 0)
            limit = spec.class_limits[task_class, k]
            tasks[base + T_IDX["slack"]] = (limit - view.task_waiting_s[j]) / TIME_SCALE_S
    tasks += [0.0] * ((q - len(view.task_patches)) * n_ft)
    glob = (
        view.now / spec.time_limit_s,
        n_idle / n,
        view.n_waiting / spec.visible_queue,
        view.n_arrived / spec.tasks_per_episode,
        view.n_launched / spec.tasks_per_episode,
    )
    return {
        "servers": np.array(servers, dtype=np.float32).reshape(n, n_fs),
        "tasks": np.array(tasks, dtype=np.float32).reshape(q, n_ft),
        "globals": np.array(glob, dtype=np.float32),
    }
