"""B simulated clusters stepped together with array code.

Same rules as `ClusterEnv` (read that first: it is the plain statement), over arrays that hold all B
environments. Each environment owns its seeded generator and resets itself when its episode ends;
finished episodes come back as rows of statistics. Tests check that B environments here follow exactly
the trajectories of B single environments given the same seeds and actions, and that every
observation equals `encode(raw_view())` bit for bit.

How it is fast (docs/simulator.md has the measurements):

- The batch is the last, contiguous axis of every state array: servers are (N, B), queue slots
  (Q+1, B), tasks (T+1, B). A reduction over servers or slots is then a few whole-row operations
  (NumPy reduces a short last axis row by row, at ~50 ns a row), so the cost per decision stays flat
  in B and grows linearly with N. Per-task values sit in flat arrays at `task * B + env`; task T is a
  sentinel (arrival inf, key 0).
- A step works on all B environments with masks (which launch, which wait) rather than gathering
  subsets, except on the rarer paths (new gangs, envs that must wait for servers, resets). Subsets are
  gathered with `take(envs, axis=...)`, which gives C order; `a[:, envs]` gives F order, and the
  operations after it run several times slower.
- The queue is the first Q+1 tasks not launched yet (`cand_*`), arrived or not, in index order.
  Arrivals come in index order and only visible tasks launch, so the visible queue is exactly those
  of the first Q that have arrived and the waiting count is arrived - launched. A launch drops one
  candidate and appends the next task; time moving changes nothing here.
- A task's key is patches * (n_models + 1) + model. Paper mode keeps, per server, the key of the
  intact loaded group it belongs to (`member_key`, 0 = none) and the same at the group's leader only
  (leader key): a task can reuse a group when its key equals an idle leader's. On small clusters the
  whole group state is one number per env, stepped by lookups in a `GroupTable` (made by running the
  scalar rule book on every reachable state) instead of a few dozen array operations.
- Tokens come from `TokenTables`: a task token is the row for (key, visible, reusable, feasible) with
  its waiting time written in, a server token the row for (speed, group key or resident models, idle)
  with its remaining time written in.
- Sums keep NumPy's pairwise order (`numpy_order_sum`), so rewards are bit-identical to the layout
  with the batch first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import (
    S_IDX,
    T_IDX,
    TIME_SCALE_S,
    Observation,
    ObservationSpec,
    RawView,
    TokenTables,
    encode,
)
from policy_models.profiles import profile_min_steps, profile_quality_table
from policy_models.reward import launch_reward
from policy_models.sim.group_table import GroupTable
from policy_models.sim.stats import SLO_FIELDS, STAT_FIELDS, EpisodeStats
from policy_models.slo import class_bonus, class_limits, slo_deadlines, standalone_table
from policy_models.workload import make_rng, uniforms_per_episode, workload_from_uniforms

COL = {name: i for i, name in enumerate(STAT_FIELDS)}
# Each env draws the workloads of its next episodes in blocks of this many (fewer when B * T is large,
# to bound the memory): one generator call and one transform per block, not per episode.
MAX_EPISODES_PER_BLOCK = 64
BLOCK_CELLS = 1 << 20  # tasks per block array: ~12 MiB in all, as much as the draws took before
INT_MAX = np.iinfo(np.int64).max
# Up to this many servers, per-server ranks and group tests compare every pair of servers ((N, N, B)
# arrays, no sort or scatter); above it they sort and scatter, whose cost grows as N log N and N.
SMALL_N = 16
# The statistics a launch adds to (besides launched), in STAT_FIELDS order (see _record).
LAUNCH_STATS = slice(COL["reloads"], COL["total_reward"] + 1)
assert STAT_FIELDS[LAUNCH_STATS] == (
    "reloads",
    "below_threshold",
    "decisions",
    "sum_response_s",
    "sum_wait_s",
    "sum_init_s",
    "sum_run_s",
    "sum_quality",
    "sum_steps",
    "total_reward",
)
SLO_STATS = slice(COL[SLO_FIELDS[0]], COL[SLO_FIELDS[-1]] + 1)
assert STAT_FIELDS[SLO_STATS] == SLO_FIELDS
# Per-server state that changes at launches, one (4, N, B) array so a reset or a new group writes it at
# once: paper-mode groups (module docstring) and the server's token-table row (but for idle).
GROUP, MEMBER_KEY, LEADER_KEY, SERVER_CODE = 0, 1, 2, 3


@dataclass
class StepResult:
    obs: Observation
    reward: np.ndarray  # (B,)
    terminated: np.ndarray  # (B,) bool
    truncated: np.ndarray  # (B,) bool
    launched: np.ndarray  # (B,) bool: this decision started a task
    reloaded: np.ndarray  # (B,) bool
    steps: np.ndarray  # (B,) int steps of the launched task (0 when none)
    finished_envs: np.ndarray  # (E,) envs whose episode ended at this step (they have been reset)
    finished_stats: np.ndarray  # (E, len(STAT_FIELDS)) their statistics, columns in STAT_FIELDS order

    @property
    def finished(self) -> list[tuple[int, EpisodeStats]]:
        return [
            (int(e), EpisodeStats.from_row(row))
            for e, row in zip(self.finished_envs, self.finished_stats, strict=True)
        ]


def numpy_order_sum(rows: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in the order NumPy's pairwise summation adds a contiguous last axis.

    `x.sum(axis=-1)` on a (B, n) array and `numpy_order_sum(x.T)` agree bit for bit, so keeping the
    batch on the last axis does not move a reward by one ulp. (A plain sum over axis 0 adds the rows
    one after the other, which rounds differently once n >= 8.)
    """
    n = rows.shape[0]
    if n < 8:
        total = np.zeros(rows.shape[1:])
        for row in rows:
            total += row
        return total
    if n > 128:  # NumPy's block size: it splits the range in two (a multiple of 8 first) and recurses
        half = n // 2 - (n // 2) % 8
        return numpy_order_sum(rows[:half]) + numpy_order_sum(rows[half:])
    stop = n - n % 8
    acc = rows[:8] if stop == 8 else rows[:8].copy()
    for start in range(8, stop, 8):
        acc += rows[start : start + 8]
    pairs = acc[0::2] + acc[1::2]  # ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    total = (pairs[0] + pairs[1]) + (pairs[2] + pairs[3])
    for i in range(stop, n):
        total += rows[i]
    return total


def first_max(values: np.ndarray) -> np.ndarray:
    """argmax over axis 0 (the first row on ties), from whole-row operations."""
    n = values.shape[0]
    hits = values == values.max(0)
    weights = np.arange(n, 0, -1, dtype=np.int16 if n < 2**15 else np.int64)[:, None]
    return n - (hits * weights).max(0).astype(np.int64)


def first_k(order: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N, E) mask of the k smallest of each column of `order`, whose values must be distinct
    wherever they can be chosen (a value that can never be chosen may repeat, e.g. INT_MAX)."""
    n = order.shape[0]
    if n <= SMALL_N:  # rank by comparing every pair: a few whole-array operations, no sort
        return (order[:, None] < order[None]).sum(0) < k
    rows = order.T.copy()  # C order, whatever the layout of `order`
    rows.sort(axis=1)
    return order <= rows.ravel().take(np.arange(order.shape[1]) * n + k - 1)


def as_rows(table: np.ndarray) -> np.ndarray:
    """A (R, F) float32 table as R void items, so `take` copies whole token rows."""
    table = np.ascontiguousarray(table, dtype=np.float32)
    return table.view(np.dtype((np.void, table.shape[1] * 4))).ravel()


class BatchedClusterSim:
    """B clusters of one configuration, one seed each; `reset()` once, then `step(actions)`."""

    def __init__(self, config: SimConfig, seeds: Sequence[int]) -> None:
        self.cfg = config
        self.spec = ObservationSpec.from_config(config)
        self.batch = len(seeds)
        self.rngs = [make_rng(s) for s in seeds]
        self._init_constants()
        self._init_workload_blocks()
        self._init_state()

    def _init_constants(self) -> None:
        cfg, spec = self.cfg, self.spec
        b, n, t, q = self.batch, cfg.n_servers, cfg.tasks_per_episode, cfg.visible_queue
        self._warm = cfg.mode == "warm"
        self._keys_per_size = cfg.n_models + 1
        self._n_keys = (cfg.max_patches + 1) * self._keys_per_size
        self._key_bits = self._n_keys <= 63  # paper mode: reusable keys as bits of an int64 (else a table)
        self._env = np.arange(b)
        self._first_tasks = np.minimum(np.arange(q + 1), t)[:, None] * b  # flat rows of tasks 0..Q
        self._server_ix = np.arange(n)[:, None]
        self._slot_ix = np.arange(q)[:, None]
        self._bit = (1 << np.arange(n, dtype=np.int64))[:, None]  # server n's bit
        self._step_s, self._init_s = (np.nan_to_num(a) for a in cfg.profile.lookup_arrays(cfg.max_patches))
        self._quality = profile_quality_table(cfg.profile_name, cfg.max_steps)  # calibrated or the paper's
        speeds = np.asarray(cfg.speeds, dtype=np.float64)
        self._speed = speeds[:, None]
        self._slots = np.asarray(cfg.slots, dtype=np.int64)[:, None]
        self._uniform_speed = float(speeds[0]) if (speeds == speeds[0]).all() else None
        self._warm_speed_frac = self._speed / (2.0 * speeds.max())
        self._faults = cfg.faults
        lb_steps = profile_min_steps(cfg.profile_name, cfg.reward.quality_threshold, cfg.max_steps)
        self._lb_run = self._step_s * lb_steps / speeds.max()
        self._slo_limits = slo_deadlines(standalone_table(cfg))  # (scales, gang size): policy_models.slo
        self._class_limits = class_limits(cfg)  # (SLO class, gang size): each task's own deadline
        self._class_bonus = class_bonus(cfg)
        # Globals: now, idle servers, waiting, arrived and launched tasks over their scales.
        scales = (spec.time_limit_s, n, spec.visible_queue, spec.tasks_per_episode, spec.tasks_per_episode)
        self._global_scales = np.array(scales, dtype=np.float64)[:, None]
        tables = TokenTables.for_config(cfg)
        self._task_rows, self._server_rows = as_rows(tables.task_rows), as_rows(tables.server_rows)
        self._server_code_base = tables.server_base[:, None]
        self._slow_code_shift = (tables.slow_base - tables.server_base)[:, None] * 2  # a slowed server's row
        # Paper mode on a small cluster: one group-state number per env, stepped by table lookups, and
        # all N server tokens of an env (but remaining times) by group state << N | idle bits.
        self._table = None if self._warm else GroupTable.for_config(cfg)
        if self._table is not None:
            idle_bits = np.arange(1 << n)[:, None] >> np.arange(n) & 1  # (2**N, N)
            codes = (self._server_code_base[:, 0] + self._table.member_key)[:, None, :] * 2 + idle_bits
            blocks = tables.server_rows[codes.reshape(-1, n)]  # (states << N, N, Fs)
            self._server_blocks = as_rows(blocks.reshape(blocks.shape[0], -1))

    def _init_workload_blocks(self) -> None:
        """The workloads of each env's next episodes, made from one generator call per env and block:
        the same stream as one draw per episode (so trajectories still match ClusterEnv), far fewer
        calls."""
        b, t = self.batch, self.cfg.tasks_per_episode
        self._block_size = max(1, min(MAX_EPISODES_PER_BLOCK, BLOCK_CELLS // (b * t)))
        self._block_arrival = np.zeros((b, self._block_size, t))
        self._block_key = np.zeros((b, self._block_size, t), dtype=np.int32)
        self._block_class = np.zeros((b, self._block_size, t), dtype=np.int8)  # SLO class per task
        n = self.cfg.n_servers
        # ServerFaults per episode: down start, down end, slow start, slow end of each server.
        self._block_faults = np.full((b, self._block_size, 4, n) if self.cfg.faults else (b, 0, 4, n), np.inf)
        self._block_arrived = np.zeros((b, self._block_size), dtype=np.int64)  # tasks waiting at t=0
        self._next_draw = np.full(b, self._block_size)
        self._episode_draw = np.zeros(b, dtype=np.int64)  # where in its block each env's episode is

    def _init_state(self) -> None:
        cfg = self.cfg
        b, n, t, q, m = self.batch, cfg.n_servers, cfg.tasks_per_episode, cfg.visible_queue, cfg.n_models
        self.now = np.zeros(b)
        self.tick = np.zeros(b, dtype=np.int64)
        self.busy_until = np.zeros((n, b))
        # The server state of a new episode: no groups, token rows (code base + 0) * 2 (see TokenTables).
        self._empty_servers = np.zeros((4, n, 1), dtype=np.int64)
        self._empty_servers[GROUP] = -1
        self._empty_servers[SERVER_CODE] = self._server_code_base * 2
        self.server_state = self._empty_servers + np.zeros((4, n, b), dtype=np.int64)
        self._server_state_rows = (np.arange(4 * n) * b).reshape(4, n, 1)  # flat index of env 0
        self.group_state = np.zeros(b, dtype=np.int64)  # with a GroupTable
        # warm mode: when server n last used model m ([m, n, env]; -inf = not resident; row 0 unused),
        # and the resident models as bits (bit m-1 = model m).
        self.last_used = np.full((m + 1, n, b), -np.inf) if self._warm else np.zeros((0, n, b))
        self.resident_bits = np.zeros((n, b), dtype=np.int64)
        # The current episode's tasks (row T is the sentinel).
        self.arrival = np.full((t + 1, b), np.inf)
        self.key = np.zeros((t + 1, b), dtype=np.int64)
        self.slo_class = np.zeros((t + 1, b), dtype=np.int64)  # 0 = interactive (policy_models.slo)
        # The queue: the first Q+1 tasks not launched yet, and the index of the task after them.
        self.cand_arrival = np.full((q + 1, b), np.inf)
        self.cand_key = np.zeros((q + 1, b), dtype=np.int64)
        self.cand_class = np.zeros((q + 1, b), dtype=np.int64)
        # ServerFaults: (4, N, B) down start, down end, slow start, slow end; outages not yet begun.
        self.faults = np.full((4, n, b), np.inf)
        self.down_pending = np.zeros((n, b), dtype=bool)
        self.next_task = np.zeros(b, dtype=np.int64)
        self.n_arrived = np.zeros(b, dtype=np.int64)
        self.stats = np.zeros((len(STAT_FIELDS), b))
        self.terminated = np.zeros(b, dtype=bool)
        self.truncated = np.zeros(b, dtype=bool)
        # Noted by each observation for the next decision (the state does not change in between).
        self._idle = np.ones((n, b), dtype=bool)
        self._feasible = np.zeros((q, b), dtype=bool)
        self._any_feasible = np.zeros(b, dtype=bool)
        self._idle_leader_key = np.zeros((n, b), dtype=np.int64)
        self._state_and_idle = np.zeros(b, dtype=np.int64)  # group state << N | idle bits

    @property
    def group(self) -> np.ndarray:
        """(N, B) paper mode: leader of each server's intact loaded group, -1 = none."""
        if self._table is not None:
            return self._table.leader.take(self.group_state, axis=0).T
        return self.server_state[GROUP]

    @property
    def member_key(self) -> np.ndarray:
        """(N, B) paper mode: key (size * (n_models + 1) + model) of each server's group, 0 = none."""
        if self._table is not None:
            return self._table.member_key.take(self.group_state, axis=0).T
        return self.server_state[MEMBER_KEY]

    # ----- lifecycle ---------------------------------------------------------------------------------
    def reset(self) -> Observation:
        self._reset_envs(self._env)
        return self._observe()

    def _reset_envs(self, envs: np.ndarray) -> None:
        cfg, t = self.cfg, self.cfg.tasks_per_episode
        draw = self._take_draws(envs)
        self.arrival[:t, envs] = self._block_arrival[envs, draw].T
        self.key[:t, envs] = self._block_key[envs, draw].T
        self.slo_class[:t, envs] = self._block_class[envs, draw].T
        self.n_arrived[envs] = self._block_arrived[envs, draw]
        self.now[envs] = 0.0
        if cfg.tick_s is not None:
            self.tick[envs] = 0
        self.busy_until[:, envs] = 0.0
        if self._warm:
            self.last_used[:, :, envs] = -np.inf
            self.resident_bits[:, envs] = 0
        self.server_state[:, :, envs] = self._empty_servers
        self.group_state[envs] = 0
        first = self._first_tasks + envs
        self.cand_arrival[:, envs] = self.arrival.ravel().take(first)
        self.cand_key[:, envs] = self.key.ravel().take(first)
        self.cand_class[:, envs] = self.slo_class.ravel().take(first)
        self.next_task[envs] = min(cfg.visible_queue + 1, t)
        self.stats[:, envs] = 0.0
        if self._faults is not None:
            self.faults[:, :, envs] = self._block_faults[envs, draw].transpose(1, 2, 0)
            self.down_pending[:, envs] = np.isfinite(self.faults[0, :, envs].T)
            self._apply_downs(self.now)
        self.terminated[envs] = False
        self.truncated[envs] = False
        # A task waiting at t=0 always fits the N idle servers; without one, go to the first launch.
        if cfg.tick_s is None and cfg.initial_tasks == 0:
            self._settle_new_episodes(envs)
            self.n_arrived[envs] = (self.arrival.take(envs, axis=1) <= self.now[envs]).sum(0)

    def _take_draws(self, envs: np.ndarray) -> np.ndarray:
        """Each env's index into its block of upcoming workloads, drawing a new block where used up."""
        empty = envs[self._next_draw[envs] == self._block_size]
        if empty.size:
            cfg = self.cfg
            shape = (self._block_size, uniforms_per_episode(cfg))
            uniforms = np.concatenate([self.rngs[e].random(shape) for e in empty.tolist()])
            wl = workload_from_uniforms(uniforms, cfg)
            block = (empty.size, self._block_size, cfg.tasks_per_episode)
            self._block_arrival[empty] = wl.arrival_s.reshape(block)
            self._block_key[empty] = (wl.patches * self._keys_per_size + wl.model).reshape(block)
            self._block_class[empty] = wl.slo_class.reshape(block)
            if cfg.faults is not None:
                faults = np.stack([wl.down_start, wl.down_end, wl.slow_start, wl.slow_end], 1)
                self._block_faults[empty] = faults.reshape(*block[:2], 4, cfg.n_servers)
            self._block_arrived[empty] = (wl.arrival_s <= 0.0).sum(1).reshape(block[:2])
            self._next_draw[empty] = 0
        draw = self._next_draw[envs]
        self._next_draw[envs] += 1
        self._episode_draw[envs] = draw
        return draw

    def step(self, actions: np.ndarray) -> StepResult:
        cfg = self.cfg
        act = self._checked_actions(actions)
        self.stats[COL["decisions"]] += 1
        slot = first_max(np.where(self._feasible, act[2:], -np.inf))
        launch = (act[0] > 0.0) & self._any_feasible
        if launch.any():
            reward, reloaded, steps = self._launch(launch, slot, act[1])
            self.terminated |= launch & (self.stats[COL["launched"]] == cfg.tasks_per_episode)
        else:
            reward, reloaded, steps = np.zeros(self.batch), launch.copy(), np.zeros(self.batch, np.int64)
        self._advance_time(~launch)
        self.n_arrived = self._count_arrived()
        self.truncated |= ~self.terminated & (self.stats[COL["decisions"]] >= cfg.max_decisions)
        terminated, truncated = self.terminated.copy(), self.truncated.copy()
        done_envs, done_stats = self._finish_episodes(terminated | truncated)
        obs = self._observe()
        return StepResult(obs, reward, terminated, truncated, launch, reloaded, steps, done_envs, done_stats)

    def _count_arrived(self) -> np.ndarray:
        arrived = (self.arrival <= self.now).view(np.uint8)  # summed as bytes: ~3x faster than bools
        count_type = np.uint8 if self.arrival.shape[0] < 256 else np.int64
        return arrived.sum(0, dtype=count_type).astype(np.int64)

    def _checked_actions(self, actions: np.ndarray) -> np.ndarray:
        """(2+Q, B) actions clipped to [-1, 1] (a transposed view); raises on a wrong shape or a
        non-finite value."""
        actions = np.asarray(actions, dtype=np.float64)
        shape = (self.batch, self.cfg.action_dim)
        if actions.shape != shape or not np.isfinite(actions).all():
            raise ValueError(f"actions must be finite, shape {shape}")
        return np.clip(actions, -1.0, 1.0).T

    def _finish_episodes(self, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        envs = np.flatnonzero(done)
        if not envs.size:
            return envs, np.zeros((0, len(STAT_FIELDS)))
        t = self.cfg.tasks_per_episode
        # Arrivals come in index order, so the arrived tasks are the first n_arrived. (E, T) in C order,
        # so the sum adds in the order it always has.
        arrived = np.arange(t) < self.n_arrived[envs, None]
        patches = self._block_key[envs, self._episode_draw[envs]] // self._keys_per_size
        lb = np.where(arrived, self._lb_run[patches], 0.0)
        self.stats[COL["arrived"], envs] = self.n_arrived[envs]
        self.stats[COL["sum_lower_bound_s"], envs] = lb.sum(1)
        self.stats[COL["end_time_s"], envs] = self.now[envs]
        self.stats[COL["makespan_s"], envs] = np.maximum(self.now[envs], self.stats[COL["makespan_s"], envs])
        batch_class = np.where(arrived, self._block_class[envs, self._episode_draw[envs]], 0).sum(1)
        self.stats[COL["class0_arrived"], envs] = self.n_arrived[envs] - batch_class
        self.stats[COL["class1_arrived"], envs] = batch_class
        rows = self.stats[:, envs].T.copy()
        self._reset_envs(envs)
        return envs, rows

    # ----- the launch --------------------------------------------------------------------------------
    def _launch(
        self, launch: np.ndarray, slot: np.ndarray, steps_action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start the chosen task in every env of `launch`; returns reward, reloaded and steps (zero
        where nothing launched)."""
        cfg = self.cfg
        # selector.decode_steps; with the action in [-1, 1] x stays in [min, max] (no clip needed) and
        # x + 0.5 > 0, so truncation is the floor.
        x = cfg.min_steps + (steps_action + 1.0) * 0.5 * (cfg.max_steps - cfg.min_steps)
        steps = (x + 0.5).astype(np.int64)
        at_slot = slot * self.batch + self._env
        key = self.cand_key.ravel().take(at_slot)
        k = key // self._keys_per_size
        now = self.now
        if self._warm:
            members, reused = self._gang_warm(launch, k, key - k * self._keys_per_size)
            init = np.where(reused, cfg.profile.group_setup_s, self._init_s[k])
        else:
            members, reused = self._gang_paper(launch, k, key)
            init = self._init_s[k] * ~reused
        if self._faults is not None:
            slowest = np.where(members, self._speed_now(), np.inf).min(0)
            slowest[~launch] = 1.0
        elif self._uniform_speed is None:
            slowest = np.where(members, self._speed, np.inf).min(0)
            slowest[~launch] = 1.0
        else:
            slowest = self._uniform_speed
        run = self._step_s[k] * steps / slowest
        self.busy_until = np.where(members, now + init + run, self.busy_until)
        finish = np.where(launch, now + init + run, 0.0)
        self.stats[COL["makespan_s"]] = np.maximum(self.stats[COL["makespan_s"]], finish)
        # A waiting time of 1 s where nothing launches keeps the reward's denominator positive there.
        wait = np.where(launch, now - self.cand_arrival.ravel().take(at_slot), 1.0)
        slo_class = self.cand_class.ravel().take(at_slot)
        self._drop_candidate(launch, slot)
        self.stats[COL["launched"]] += launch
        quality = self._quality[steps]
        reward = launch_reward(wait, init + run, self._queue_wait(), quality, cfg.reward)
        deadline_met = (wait + init + run <= self._class_limits[slo_class, k]) & launch
        if cfg.slo_classes is not None:
            reward = reward + np.where(deadline_met, self._class_bonus[slo_class], 0.0)
        below = quality < cfg.reward.quality_threshold
        self._record(launch, ~reused, below, wait, init, run, quality, steps, reward)
        self.stats[SLO_STATS] += (wait + init + run <= self._slo_limits[:, k]) & launch
        self.stats[COL["class0_met"]] += deadline_met & (slo_class == 0)
        self.stats[COL["class1_met"]] += deadline_met & (slo_class == 1)
        return reward * launch, launch & ~reused, steps * launch

    def _drop_candidate(self, launch: np.ndarray, slot: np.ndarray) -> None:
        """Remove the launched candidate (the later ones move up) and append the next task."""
        shift = launch & (self._slot_ix >= slot)
        incoming = self.next_task * self.batch + self._env
        pairs = (
            (self.cand_arrival, self.arrival),
            (self.cand_key, self.key),
            (self.cand_class, self.slo_class),
        )
        for values, per_task in pairs:
            values[:-1] = np.where(shift, values[1:], values[:-1])
            values[-1] = np.where(launch, per_task.ravel().take(incoming), values[-1])
        self.next_task += launch & (self.next_task < self.cfg.tasks_per_episode)

    def _queue_wait(self) -> np.ndarray:
        """Mean waiting time of the visible queue after the launch (0 when empty)."""
        waiting = self.now - self.cand_arrival[:-1]
        np.maximum(waiting, 0.0, out=waiting)  # 0 for tasks not arrived yet
        visible = np.minimum(self.n_arrived - self.stats[COL["launched"]], self.cfg.visible_queue)
        return numpy_order_sum(waiting) / np.maximum(visible, 1.0)

    def _record(self, launch: np.ndarray, *values: np.ndarray) -> None:
        """Add a launch's statistics (columns reloads .. total_reward; decisions, in between, gets 0)."""
        reloaded, below, wait, init, run, quality, steps, reward = values
        no_change = np.zeros(self.batch)
        delta = np.stack(
            [reloaded, below, no_change, wait + init + run, wait, init, run, quality, steps, reward]
        )
        self.stats[LAUNCH_STATS] += np.where(launch, delta, 0.0)

    def _gang_paper(
        self, launch: np.ndarray, k: np.ndarray, key: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._table is not None:
            return self._gang_from_table(launch, key)
        # Reuse: an idle intact group with the task's key (the lowest leader first).
        reusable = self._idle_leader_key == key
        reused = launch & reusable.any(0)
        members = np.zeros_like(reusable)
        if reused.any():
            leader = np.where(reusable, self._server_ix, self.cfg.n_servers).min(0)
            members = (self.group == leader) & reused
        fresh = np.flatnonzero(launch & ~reused)
        if fresh.size:
            members[:, fresh] = self._new_groups(fresh, k[fresh], key[fresh])
        return members, reused

    def _gang_from_table(self, launch: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """_gang_paper by lookups in the group table (small clusters)."""
        table = self._table
        assert table is not None
        row = self._state_and_idle * table.n_keys + key
        reused = launch & table.reused.take(row)
        self.group_state = np.where(launch, table.next_state.take(row), self.group_state)
        members = table.members.take(row) * launch & self._bit > 0
        return members, reused

    def _new_groups(self, envs: np.ndarray, k: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Choose a new gang in each of `envs` (select_gang_paper) and load the model on it as a new
        group, which replaces every group its members belonged to (their processes are ended)."""
        n = self.cfg.n_servers
        state = self.server_state.take(envs, axis=2)
        group, member_key = state[GROUP], state[MEMBER_KEY]
        idle, grouped = self._idle.take(envs, axis=1), group >= 0
        # Idle servers outside loaded groups first (by index), then loaded ones: the smallest group
        # that covers the remainder alone, else the largest groups first; then by group and index.
        size = member_key // self._keys_per_size
        remainder = k - (idle & ~grouped).sum(0)
        rank = np.where(size >= remainder, size, 2 * n - size)  # selector._group_rank, >= 1
        ix = self._server_ix
        order = np.where(grouped, (rank * n + group) * n + ix, ix)  # grouped ones after n - 1
        order[~idle] = INT_MAX
        members = first_k(order, k)
        dissolve = grouped & self._touched_groups(group, members & grouped)
        leader = np.where(members, ix, n).min(0)
        state[GROUP] = np.where(members, leader, np.where(dissolve, -1, group))
        state[MEMBER_KEY] = np.where(members, key, np.where(dissolve, 0, member_key))
        state[LEADER_KEY] = state[MEMBER_KEY] * (state[GROUP] == ix)
        state[SERVER_CODE] = (self._server_code_base + state[MEMBER_KEY]) * 2
        self.server_state.ravel()[self._server_state_rows + envs] = state
        return members

    def _touched_groups(self, group: np.ndarray, marks: np.ndarray) -> np.ndarray:
        """(N, E): whether server n's group (group[n], a leader index) has a marked member."""
        n, e = group.shape
        if n <= SMALL_N:  # compare every pair of servers: a few whole-array operations
            return ((group[:, None] == group[None]) & marks[None]).any(1)
        cols = np.arange(e)
        touched = np.zeros(n * e, dtype=bool)
        touched[(group * e + cols)[marks]] = True
        return touched.take(group * e + cols, mode="clip")

    def _gang_warm(self, launch: np.ndarray, k: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Holders of the model first (fastest first), then servers with a free slot, then by speed
        (select_gang_warm); members lacking the model load it, evicting their least recently used."""
        n, b = self.cfg.n_servers, self.batch
        bits = self.resident_bits
        holds = (bits >> np.maximum(m - 1, 0)) & 1 == 1
        free = self._n_resident < self._slots
        speed_frac = self._warm_speed_frac
        if self._faults is not None:  # select_gang_warm scales by the fastest speed now
            speed = self._speed_now()
            speed_frac = speed / (2.0 * speed.max(0))
        preference = 4.0 * holds + 2.0 * (free & ~holds) + speed_frac
        envs = np.flatnonzero(launch)
        candidates = np.where(self._idle.take(envs, axis=1), -preference.take(envs, axis=1), np.inf).T.copy()
        order = np.argsort(candidates, axis=1, kind="stable")  # ties: the lower index
        chosen = np.zeros(candidates.shape, dtype=bool)
        chosen.ravel()[order + np.arange(envs.size)[:, None] * n] = np.arange(n) < k[envs, None]
        members = np.zeros((n, b), dtype=bool)
        members[:, envs] = chosen.T
        reused = ~(members & ~holds).any(0)
        last = self.last_used.reshape(-1)
        servers, cols = np.nonzero(members & ~holds & ~free)
        if servers.size:
            rows = self.last_used[1:, servers, cols]
            lru = np.where(rows != -np.inf, rows, np.inf).argmin(0) + 1
            last[(lru * n + servers) * b + cols] = -np.inf
            bits[servers, cols] &= ~(1 << (lru - 1))
        servers, cols = np.nonzero(members)
        model = m[cols]
        last[(model * n + servers) * b + cols] = self.now[cols]
        bits[servers, cols] |= 1 << (model - 1)
        self.server_state[SERVER_CODE] = (self._server_code_base + bits) * 2
        return members, reused

    # ----- time --------------------------------------------------------------------------------------
    def _advance_time(self, waited: np.ndarray) -> None:
        """Move time after a decision: one tick, or (event-driven) to the first instant where a launch
        is possible, from the next event or the decision timer after a wait, from now after a launch."""
        cfg = self.cfg
        if cfg.tick_s is not None:
            self.tick += waited
            self.now = np.where(waited, self.tick * cfg.tick_s, self.now)
            self.truncated |= waited & (self.now > cfg.time_limit_s)
            return
        start = self.now
        if waited.any():
            busy = self.busy_until
            next_finish = np.where(busy > self.now, busy, np.inf).min(0)
            next_arrival = self.arrival.ravel().take(self.n_arrived * self.batch + self._env)
            next_event = np.minimum(np.minimum(next_arrival, next_finish), self.now + cfg.recheck_s)
            if self._faults is not None:  # a server going down is an event too
                next_event = np.minimum(next_event, self._next_down())
            start = np.where(waited, next_event, self.now)
        if self._faults is not None:
            self._apply_downs(np.where(self.terminated, -np.inf, start))
        n_idle = (self.busy_until <= start).sum(0)
        fits = (self.cand_arrival[:-1] <= start) & (self.cand_key[:-1] < (n_idle + 1) * self._keys_per_size)
        target = start
        blocked = np.flatnonzero(~self.terminated & ~fits.any(0))
        if blocked.size:
            target = start.copy()
            target[blocked] = self._next_feasible_time(blocked, start[blocked])
            if self._faults is not None:
                self._past_downs(blocked, target)
        # Past the time limit the episode stops at the limit, truncated.
        self.now = np.where(self.terminated, self.now, np.minimum(target, cfg.time_limit_s))
        self.truncated |= ~self.terminated & (target > cfg.time_limit_s)

    def _next_down(self) -> np.ndarray:
        """(B,) when the next server goes down (inf when none will)."""
        return np.where(self.down_pending, self.faults[0], np.inf).min(0)

    def _apply_downs(self, at: np.ndarray) -> None:
        """Outages that have begun by `at` (B,): the server is busy until it is back (or its task is done,
        if later)."""
        begun = self.down_pending & (self.faults[0] <= at)
        if begun.any():
            self.busy_until = np.where(begun, np.maximum(self.busy_until, self.faults[1]), self.busy_until)
            self.down_pending &= ~begun

    def _past_downs(self, blocked: np.ndarray, target: np.ndarray) -> None:
        """_next_feasible_time assumes idle servers stay idle; an outage beginning by the instant it found
        breaks that. Like ClusterEnv, which steps through every event, stop at the outage, apply it and
        look again from there, until no outage begins before the first feasible instant."""
        limit = self.cfg.time_limit_s
        while True:
            down = self._next_down()[blocked]
            crossing = (down <= target[blocked]) & (down <= limit)
            if not crossing.any():
                return
            envs = blocked[crossing]
            at = np.full(self.batch, -np.inf)
            at[envs] = down[crossing]
            self._apply_downs(at)
            target[envs] = self._next_feasible_time(envs, down[crossing])

    def _speed_now(self) -> np.ndarray:
        """(N, B) speed of each server now: slowed inside its slow-down window (ServerFaults)."""
        assert self._faults is not None
        slowed = (self.faults[2] <= self.now) & (self.now < self.faults[3])
        return np.where(slowed, self._speed * self._faults.slow_factor, self._speed)

    def _settle_new_episodes(self, envs: np.ndarray) -> None:
        """Move new episodes to their first instant with a possible launch (all servers are idle)."""
        blocked = envs[~(self.cand_arrival[:-1].take(envs, axis=1) <= 0.0).any(0)]
        if blocked.size:
            target = self._next_feasible_time(blocked, self.now[blocked])
            self.now[blocked] = np.minimum(target, self.cfg.time_limit_s)
            self.truncated[blocked] = target > self.cfg.time_limit_s

    def _next_feasible_time(self, envs: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The first instant from `start` on at which a launch is possible.

        Until then nothing launches, so the candidates stay the same and the idle count only grows: r
        servers are idle from the r-th earliest release time on. A candidate needing p servers is
        startable from max(its arrival, that time for r=p). ClusterEnv reaches the same instant by
        stepping through every event in between.
        """
        release = np.sort(np.maximum(self.busy_until.take(envs, axis=1), start), axis=0)
        release = np.concatenate([start[None], release])  # row r = the time r servers are idle
        e = envs.size
        patches = self.cand_key[:-1].take(envs, axis=1) // self._keys_per_size
        need = release.ravel().take(patches * e + np.arange(e))
        return np.maximum(self.cand_arrival[:-1].take(envs, axis=1), need).min(0)

    # ----- observation -------------------------------------------------------------------------------
    @property
    def _n_resident(self) -> np.ndarray:
        """(N, B) warm mode: models resident on each server."""
        bits = self.resident_bits
        return sum(((bits >> i) & 1 for i in range(self.cfg.n_models)), np.zeros_like(bits))

    def _observe(self) -> Observation:
        """The observation of every env; also notes, for the next decision, the idle servers and the
        launch candidates (visible tasks that fit the idle servers)."""
        idle = self.busy_until <= self.now
        n_idle = idle.sum(0)
        valid = self.cand_arrival[:-1] <= self.now  # the visible tasks
        feasible = valid & (self.cand_key[:-1] < (n_idle + 1) * self._keys_per_size)  # patches <= n_idle
        reusable = self._reusable(idle)  # also for tasks not arrived: their rows are zeros anyway
        self._idle, self._feasible, self._any_feasible = idle, feasible, feasible.any(0)
        return {
            "servers": self._server_tokens(idle),
            "tasks": self._task_tokens(valid, reusable, feasible),
            "globals": self._global_features(n_idle),
        }

    def _task_tokens(self, valid: np.ndarray, reusable: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        code = self.cand_key[:-1] * 8 + reusable * 2  # TokenTables: key * 8 + visible * 4 + reusable * 2
        code += valid.view(np.int8) * 4 + feasible.view(np.int8)  # + feasible
        tasks = self._task_rows.take(code.T).view(np.float32)  # batch first: (B, Q) rows
        tasks = tasks.reshape(self.batch, self.cfg.visible_queue, -1)
        waiting = self.now - self.cand_arrival[:-1]
        np.maximum(waiting, 0.0, out=waiting)  # 0 for tasks not arrived yet
        column = tasks.transpose(1, 0, 2)[:, :, T_IDX["waiting"]]
        np.divide(waiting, TIME_SCALE_S, out=column, casting="same_kind")
        if self.cfg.slo_classes is not None:  # obs.SLO_TASK_FEATURES: class and time left to the deadline
            by_slot = tasks.transpose(1, 0, 2)
            classes = self.cand_class[:-1]
            by_slot[:, :, T_IDX["interactive"]] = valid & (classes == 0)
            limit = self._class_limits[classes, self.cand_key[:-1] // self._keys_per_size]
            by_slot[:, :, T_IDX["slack"]] = np.where(valid, (limit - waiting) / TIME_SCALE_S, 0.0)
        return tasks

    def _server_tokens(self, idle: np.ndarray) -> np.ndarray:
        if self._table is not None:  # one row per env: the group state and idle servers fix all N
            servers = self._server_blocks.take(self._state_and_idle)
        else:
            servers = self._server_rows.take(self._server_codes(idle))
        servers = servers.view(np.float32).reshape(self.batch, self.cfg.n_servers, -1)
        remaining = self.busy_until - self.now
        np.maximum(remaining, 0.0, out=remaining)
        column = servers.transpose(1, 0, 2)[:, :, S_IDX["remaining"]]
        np.divide(remaining, TIME_SCALE_S, out=column, casting="same_kind")
        return servers

    def _global_features(self, n_idle: np.ndarray) -> np.ndarray:
        launched = self.stats[COL["launched"]]
        counts = np.stack([self.now, n_idle, self.n_arrived - launched, self.n_arrived, launched])
        features = np.empty((self.batch, counts.shape[0]), dtype=np.float32)
        np.divide(counts, self._global_scales, out=features.T, casting="same_kind")
        return features

    def _server_codes(self, idle: np.ndarray) -> np.ndarray:
        """(B, N): each server's row in the server token table."""
        codes = np.empty((self.batch, self.cfg.n_servers), dtype=np.int64)
        np.add(self.server_state[SERVER_CODE], idle, out=codes.T)
        if self._faults is not None:  # a slowed-down server shows its slowed class's row
            slowed = (self.faults[2] <= self.now) & (self.now < self.faults[3])
            codes += (slowed * self._slow_code_shift).T
        return codes

    def _reusable(self, idle: np.ndarray) -> np.ndarray:
        """(Q, B) 0/1: which candidates could start now without loading their model, were they
        visible. Paper mode: some idle leader has the candidate's key (key 0, "no group", marks the
        other servers and is never a visible candidate's key)."""
        b, m = self.batch, self.cfg.n_models
        key = self.cand_key[:-1]
        if self._table is not None:  # also notes the state and idle servers, for the next launch
            self._state_and_idle = self.group_state << self.cfg.n_servers | (idle * self._bit).sum(0)
            return (self._table.reusable_keys.take(self._state_and_idle) >> key) & 1
        if self._warm:
            patches = key // self._keys_per_size
            holders = np.zeros((m + 1, b), dtype=np.int64)
            for i in range(m):
                holders[i + 1] = (idle & ((self.resident_bits >> i) & 1 == 1)).sum(0)
            model = key - patches * self._keys_per_size
            return holders.ravel().take(model * b + self._env) >= patches
        self._idle_leader_key = self.server_state[LEADER_KEY] * idle
        if self._key_bits:  # the keys present, as bits of one integer per env
            bits = np.bitwise_or.reduce(1 << self._idle_leader_key, axis=0)
            return (bits >> key) & 1
        table = np.zeros(b * self._n_keys, dtype=bool)  # table[env, key]
        row = self._env * self._n_keys
        table[row + self._idle_leader_key] = True
        return table.take(row + key)

    def raw_view(self) -> RawView:
        """The state as a batch-first `RawView` (for `encode`, the reference the observation meets)."""
        cfg = self.cfg
        b, n = self.batch, cfg.n_servers
        per_size = self._keys_per_size
        idle = self.busy_until <= self.now
        valid = self.cand_arrival[:-1] <= self.now
        key = self.cand_key[:-1] * valid
        model_ids = np.arange(1, cfg.n_models + 1)
        if self._warm:
            resident = (self.resident_bits[..., None] >> (model_ids - 1)) & 1 == 1
            group_size = np.zeros((n, b), dtype=np.int64)
        else:
            resident = self.member_key[..., None] % per_size == model_ids
            group_size = self.member_key // per_size
        launched = self.stats[COL["launched"]].astype(np.int64)
        return RawView(
            now=self.now.copy(),
            idle=idle.T.copy(),
            remaining_s=np.maximum(self.busy_until - self.now, 0.0).T.copy(),
            group_size=group_size.T.copy(),
            speed=self._speed_now().T.copy()
            if self._faults is not None
            else np.broadcast_to(self._speed[:, 0], (b, n)),
            resident=np.ascontiguousarray(resident.transpose(1, 0, 2)),
            task_valid=valid.T.copy(),
            task_waiting_s=np.where(valid, self.now - self.cand_arrival[:-1], 0.0).T.copy(),
            task_patches=(key // per_size).T.copy(),
            task_model=(key % per_size).T.copy(),
            task_reusable=(valid & (self._reusable(idle) > 0)).T.copy(),
            task_class=(self.cand_class[:-1] * valid).T.copy(),
            n_waiting=self.n_arrived - launched,
            n_arrived=self.n_arrived.copy(),
            n_launched=launched,
            slots=np.broadcast_to(self._slots[:, 0].astype(np.float64), (b, n)),
        )

    def reference_observation(self) -> Observation:
        """`encode(raw_view())`: slower, the plain definition; tests hold `step`'s observation to it."""
        return encode(self.raw_view(), self.spec)
