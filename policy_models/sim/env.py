"""One simulated cluster as a `gymnasium.Env`, written as plain scalar code.

This is the readable statement of the simulator's rules; `BatchedClusterSim` runs the same rules over
many environments with array code and is tested to give identical trajectories.

Time model. The state is a pure function of the current time and the launches so far: a server is idle
when its busy-until time has passed, a task is queued once its arrival time has passed. Decision epochs
are event-driven by default: after a launch the next decision comes at the same instant; "wait" moves
to the next event (an arrival or a gang finishing) or by the decision timer `recheck_s`, whichever comes
first, and instants where no launch is possible are skipped.
With `tick_s` set, "wait" moves exactly one tick instead, as in the paper's reference.

Speed notes (the rules do not depend on them). State lives in plain lists and tuples: at a few
servers, Python on lists beats NumPy's per-call cost. The idle servers are worked out once per
decision, when the observation is made, and reused by the next step. In paper mode the gang choice,
the group replacement and what the observation needs from the groups are pure functions of the group
state (a few dozen values on a small cluster) and the idle servers, so they are memoised (`Memo`).
Observations come from `TokenTables` (a gather of whole token rows, then the one continuous column);
`view()` with `encode_one` is the plain route, and tests hold the two equal bit for bit.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from policy_models.config import SimConfig
from policy_models.obs import (
    S_IDX,
    T_IDX,
    TIME_SCALE_S,
    ClusterView,
    Observation,
    ObservationSpec,
    TokenTables,
    encode_one,
)
from policy_models.profiles import profile_min_steps, profile_quality_table
from policy_models.reward import launch_reward
from policy_models.selector import (
    Gang,
    decode_steps,
    group_sizes,
    replace_groups,
    select_gang_paper,
    select_gang_warm,
)
from policy_models.sim.stats import SLO_FIELDS, EpisodeStats
from policy_models.slo import class_bonus, class_limits, slo_deadlines, standalone_table
from policy_models.workload import Workload, sample_workload

NEVER_USED = -math.inf
Groups = tuple[tuple[int, ...], tuple[int, ...]]  # paper mode: (group leader, group model) per server
MEMO_LIMIT = 1 << 14  # entries per memo before it is emptied
# Past this many servers the group states rarely repeat and their keys are long: no memo.
MEMO_MAX_SERVERS = 16


class Memo(dict):
    """Results of a pure function of the paper-mode group state (few values on a small cluster), by
    argument. Shared by copies of an environment (deepcopy returns the memo itself); emptied when it
    grows past its limit; a limit of 0 keeps nothing."""

    def __init__(self, limit: int = MEMO_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def __deepcopy__(self, _memo: dict) -> Memo:
        return self

    def put(self, key: Any, value: Any) -> Any:
        if self.limit:
            if len(self) >= self.limit:
                self.clear()
            self[key] = value
        return value


_NO_MEMO = Memo(limit=0)
_SELECTIONS = Memo()  # (patches, model, idle, group, group_model) -> (gang, (group, group_model) after)
_EPOCH_VIEWS: dict[tuple[int, tuple[int, ...]], Memo] = {}  # by (keys per size, server code bases)


def observation_space(spec: ObservationSpec) -> spaces.Dict:
    """Every feature is >= 0 but a task's slack (SLO classes), which is negative once its deadline passed."""
    shapes = spec.shapes
    boxes = {key: spaces.Box(0.0, np.inf, shape=shape, dtype=np.float32) for key, shape in shapes.items()}
    if spec.class_limits is not None:
        low = np.zeros(shapes["tasks"], dtype=np.float32)
        low[:, T_IDX["slack"]] = -np.inf
        boxes["tasks"] = spaces.Box(low, np.inf, dtype=np.float32)
    return spaces.Dict(boxes)


class ClusterEnv(gym.Env):
    """N servers, a queue of diffusion tasks, one scheduling decision per step.

    Action: [execute, steps, score_1..score_Q] in [-1, 1]. Reward: `launch_reward` on a launch, 0 else.
    """

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012 - gymnasium's convention

    def __init__(self, config: SimConfig, render_mode: str | None = None) -> None:
        self.cfg = config
        self.spec_obs = ObservationSpec.from_config(config)
        self.observation_space = observation_space(self.spec_obs)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(config.action_dim,), dtype=np.float32)
        self.render_mode = render_mode
        self._profile = config.profile
        self._base_speeds = list(config.speeds)
        self._speeds = list(self._base_speeds)  # now: slowed where a server is slowed down
        self._slots = list(config.slots)
        uniform = len(set(self._speeds)) == 1 and config.faults is None
        self._uniform_speed = self._speeds[0] if uniform else None
        # The profile's calibrated quality curve when it has one, else the paper's.
        self._quality = profile_quality_table(config.profile_name, config.max_steps).tolist()
        self._lb_steps = profile_min_steps(
            config.profile_name, config.reward.quality_threshold, config.max_steps
        )
        # Response-time limits per SLO scale and gang size: _slo_limits[j][k] (policy_models.slo).
        self._slo_limits = slo_deadlines(standalone_table(config)).tolist()
        # Per-task deadlines by SLO class and gang size, and the bonus for meeting them.
        self._class_limits = class_limits(config).tolist()
        self._class_bonus = class_bonus(config).tolist()
        self._tables = TokenTables.for_config(config)
        self._normal_base = self._tables.server_base.tolist()
        self._slow_base = self._tables.slow_base.tolist()
        self._server_base = list(self._normal_base)  # now: the slowed class where slowed down
        # (group, group_model, idle) -> (reusable keys as bits, server codes): see _paper_epoch.
        shape = (self._tables.keys_per_size, tuple(self._server_base))
        small = config.n_servers <= MEMO_MAX_SERVERS
        self._epoch_views = _EPOCH_VIEWS.setdefault(shape, Memo()) if small else _NO_MEMO
        self._selections = _SELECTIONS if small else _NO_MEMO
        self._workload: Workload | None = None

    # ----- episode lifecycle -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        cfg = self.cfg
        wl = sample_workload(self.np_random, cfg)
        self._workload = wl
        self._arrival = wl.arrival_s[0].tolist()
        self._patches = wl.patches[0].tolist()
        self._model = wl.model[0].tolist()
        self._slo_class = wl.slo_class[0].tolist()
        # ServerFaults: when each server goes down and is back, slows down and recovers (inf = never).
        self._down_start, self._down_end = wl.down_start[0].tolist(), wl.down_end[0].tolist()
        self._slow_start, self._slow_end = wl.slow_start[0].tolist(), wl.slow_end[0].tolist()
        self._down_pending = [math.isfinite(t) for t in self._down_start]
        self._speeds, self._server_base = list(self._base_speeds), list(self._normal_base)
        per_size = self._tables.keys_per_size
        self._key = [p * per_size + m for p, m in zip(self._patches, self._model, strict=True)]
        self._task_code_base = [key * 8 + 4 for key in self._key]  # TokenTables code of a visible task
        self._queue: list[int] = []  # waiting tasks in arrival order
        self._arrived = 0
        n = cfg.n_servers
        self._now = 0.0
        self._tick = 0
        self._busy_until = [0.0] * n
        self._group = (-1,) * n  # paper mode: leader of the intact loaded group, -1 = none
        self._group_model = (0,) * n  # paper mode: model loaded in that group
        # warm mode: when each resident model was last used (NEVER_USED = not resident); column 0 unused.
        self._last_used = [[NEVER_USED] * (cfg.n_models + 1) for _ in range(n)]
        self._counts = dict.fromkeys(("launched", "reloads", "below_threshold", "decisions"), 0)
        self._sums = dict.fromkeys(
            ("sum_response_s", "sum_wait_s", "sum_init_s", "sum_run_s", "sum_quality", "sum_steps"), 0.0
        )
        self._total_reward = 0.0
        self._slo_met = [0] * len(SLO_FIELDS)
        self._class_met = [0, 0]
        self._last_finish = 0.0
        self._terminated = self._truncated = False
        self._note_resident_models()
        self._admit_arrivals()
        self._settle(after_wait=False)
        return self._observation(), {}

    def step(self, action: np.ndarray):
        if self._terminated or self._truncated:
            raise RuntimeError("episode is over: call reset()")
        values = self._action_values(action)
        self._counts["decisions"] += 1
        info: dict[str, Any] = {"launched": False}
        reward = 0.0
        if values[0] > 0.0:  # selector.decode_execute
            slot = self._choose_slot(values)
            if slot >= 0:
                steps = decode_steps(min(max(values[1], -1.0), 1.0), self.cfg.min_steps, self.cfg.max_steps)
                reward, info = self._launch(self._queue[slot], steps)
        if info["launched"]:
            self._after_launch()
        else:
            self._settle(after_wait=True)
        if not self._terminated and self._counts["decisions"] >= self.cfg.max_decisions:
            self._truncated = True
        if self._terminated or self._truncated:
            info["episode"] = self.episode_stats()
        return self._observation(), reward, self._terminated, self._truncated, info

    def _action_values(self, action: np.ndarray) -> list[float]:
        """The action as floats (unclipped); raises unless it is action_dim finite numbers."""
        if type(action) is np.ndarray and action.dtype == np.float64 and action.ndim == 1:
            values = action.tolist()
        else:
            values = np.asarray(action, dtype=np.float64).reshape(-1).tolist()
        if len(values) != self.cfg.action_dim or not all(map(math.isfinite, values)):
            raise ValueError(f"action must be {self.cfg.action_dim} finite numbers in [-1, 1], got {action}")
        return values

    def _choose_slot(self, values: list[float]) -> int:
        """selector.choose_task over the clipped scores: the best-scoring slot among the candidates
        (enough idle servers now), the lowest slot on ties; -1 when there is none."""
        patches, n_idle = self._patches, self._n_idle_now
        candidates = [
            slot for slot, t in enumerate(self._queue[: self.cfg.visible_queue]) if patches[t] <= n_idle
        ]
        if not candidates:
            return -1
        scores = values[2:]
        if min(scores) < -1.0 or max(scores) > 1.0:
            scores = [min(max(score, -1.0), 1.0) for score in scores]
        return max(candidates, key=scores.__getitem__)  # the first of equal maxima

    # ----- queries on the state ----------------------------------------------------------------------
    def _n_arrived(self) -> int:
        return self._arrived

    def _waiting(self) -> list[int]:
        return self._queue

    def _visible(self) -> list[int]:
        return self._queue[: self.cfg.visible_queue]

    def _admit_arrivals(self) -> None:
        """Queue every task whose arrival time has passed, and apply the server faults that have begun
        (call after time moves)."""
        arrival, now = self._arrival, self._now
        while self._arrived < len(arrival) and arrival[self._arrived] <= now:
            self._queue.append(self._arrived)
            self._arrived += 1
        if self.cfg.faults is not None:
            self._apply_faults()

    def _apply_faults(self) -> None:
        """A server whose outage has begun is busy until it is back (or its task is done, if later); a
        server inside its slow-down window has the slowed speed and token class."""
        now, factor = self._now, self.cfg.faults.slow_factor
        for n, pending in enumerate(self._down_pending):
            if pending and self._down_start[n] <= now:
                self._busy_until[n] = max(self._busy_until[n], self._down_end[n])
                self._down_pending[n] = False
        for n, base in enumerate(self._base_speeds):
            slowed = self._slow_start[n] <= now < self._slow_end[n]
            self._speeds[n] = base * factor if slowed else base
            self._server_base[n] = self._slow_base[n] if slowed else self._normal_base[n]

    def _idle(self) -> list[bool]:
        now = self._now
        return [b <= now for b in self._busy_until]

    def _launch_feasible(self) -> bool:
        now = self._now
        n_idle = sum([b <= now for b in self._busy_until])
        patches = self._patches
        return any([patches[t] <= n_idle for t in self._queue[: self.cfg.visible_queue]])

    def _holds(self, server: int, model: int) -> bool:
        if self.cfg.mode == "warm":
            return self._last_used[server][model] != NEVER_USED
        return self._group[server] >= 0 and self._group_model[server] == model

    def _resident_models(self) -> list[list[int]]:
        if self.cfg.mode == "warm":
            return [[m for m, used in enumerate(row) if used != NEVER_USED] for row in self._last_used]
        return [[m] if g >= 0 else [] for g, m in zip(self._group, self._group_model, strict=True)]

    def _note_resident_models(self) -> None:
        """Warm mode, after a launch (or reset): each server's resident models as bits (bit m-1 =
        model m), its state in the token table."""
        if self.cfg.mode == "warm":
            self._resident_bits = [
                sum(1 << (m - 1) for m, used in enumerate(row) if m and used != NEVER_USED)
                for row in self._last_used
            ]

    def _reusable_tasks(self, tasks: list[int], idle: list[bool]) -> list[bool]:
        """Which tasks could start now without loading their model."""
        ready = self._epoch(tuple(idle))[0]
        return [(ready >> self._key[t]) & 1 == 1 for t in tasks]

    def _epoch(self, idle: tuple[bool, ...]) -> tuple[int, list[int]]:
        """What the observation needs from the servers at this instant: the keys (patches *
        (n_models + 1) + model) of the tasks that could start now without a load, as bits, and each
        server's row in the server token table."""
        if self.cfg.mode == "paper":
            return self._paper_epoch(idle)
        # Warm mode: a key is reusable when that many idle servers hold its model.
        holders = [0] * (self.cfg.n_models + 1)
        for bits, ok in zip(self._resident_bits, idle, strict=True):
            if ok:
                for m in range(1, self.cfg.n_models + 1):
                    holders[m] += (bits >> (m - 1)) & 1
        per_size = self._tables.keys_per_size
        ready = 0
        for m in range(1, len(holders)):
            for k in self.cfg.patch_choices:
                if holders[m] >= k:
                    ready |= 1 << (k * per_size + m)
        codes = [
            (b + bits) * 2 + ok
            for b, bits, ok in zip(self._server_base, self._resident_bits, idle, strict=True)
        ]
        return ready, codes

    def _paper_epoch(self, idle: tuple[bool, ...]) -> tuple[int, list[int]]:
        """_epoch in paper mode, memoised: it depends only on the groups and the idle servers."""
        memo_key = (self._group, self._group_model, idle)
        found = self._epoch_views.get(memo_key)
        if found is not None:
            return found
        per_size, sizes = self._tables.keys_per_size, group_sizes(self._group)
        # A server's state is its group's key (size * (n_models + 1) + model), 0 outside any group.
        member_key = [
            sizes[g] * per_size + m if g >= 0 else 0
            for g, m in zip(self._group, self._group_model, strict=True)
        ]
        ready = 0
        for leader in sizes:  # an idle intact group can be reused by a task with its key
            if idle[leader]:
                ready |= 1 << member_key[leader]
        codes = [(b + key) * 2 + ok for b, key, ok in zip(self._server_base, member_key, idle, strict=True)]
        return self._epoch_views.put(memo_key, (ready, codes))

    # ----- transitions -------------------------------------------------------------------------------
    def _select_gang(self, task: int) -> tuple[Gang, Groups | None]:
        """The gang for `task` and, in paper mode, the (group, group_model) after it launches."""
        k, m = self._patches[task], self._model[task]
        idle = self._idle_now  # noted by the observation, the state is the same
        if self.cfg.mode == "paper":
            return self._paper_selection(k, m, idle)
        holds = [self._holds(n, m) for n in range(self.cfg.n_servers)]
        free = [
            sum(1 for u in row[1:] if u != NEVER_USED) < slots
            for row, slots in zip(self._last_used, self._slots, strict=True)
        ]
        gang = select_gang_warm(k, idle, holds, free, self._speeds)
        assert gang is not None, "a candidate task always has enough idle servers"
        return gang, None

    def _launch(self, task: int, steps: int) -> tuple[float, dict[str, Any]]:
        gang, groups_after = self._select_gang(task)
        k, m, now = self._patches[task], self._model[task], self._now
        if gang.reused:
            init = self._profile.group_setup_s if self.cfg.mode == "warm" else 0.0
        else:
            init = self._profile.init_s[k]
        slowest = self._uniform_speed or min(self._speeds[n] for n in gang.members)
        run = self._profile.step_s[k] * steps / slowest
        self._occupy(gang, m, now + init + run, groups_after)
        self._last_finish = max(self._last_finish, now + init + run)
        self._queue.remove(task)
        arrival = self._arrival
        wait = now - arrival[task]
        queue = self._queue[: self.cfg.visible_queue]
        queue_wait = sum([now - arrival[t] for t in queue]) / len(queue) if queue else 0.0
        quality = self._quality[steps]  # profile_quality
        reward = float(launch_reward(wait, init + run, queue_wait, quality, self.cfg.reward))
        slo_class = self._slo_class[task]
        deadline_met = wait + init + run <= self._class_limits[slo_class][k]
        if self.cfg.slo_classes is not None and deadline_met:
            reward += self._class_bonus[slo_class]
        self._record(wait, init, run, quality, steps, reward, reloaded=not gang.reused)
        self._record_slo(wait + init + run, k)
        self._class_met[slo_class] += deadline_met
        info = {
            "start_s": now,
            "slo_class": slo_class,
            "deadline_met": deadline_met,
            "launched": True,
            "task": task,
            "steps": steps,
            "gang": gang.members,
            "reloaded": not gang.reused,
            "wait_s": wait,
            "init_s": init,
            "run_s": run,
            "response_s": wait + init + run,
            "quality": quality,
        }
        return reward, info

    def _paper_selection(self, k: int, m: int, idle: tuple[bool, ...]) -> tuple[Gang, Groups]:
        """select_gang_paper and, for a new group, replace_groups: (the gang, the (group,
        group_model) after it launches). Memoised: both are pure functions of these arguments."""
        memo_key = (k, m, idle, self._group, self._group_model)
        found = self._selections.get(memo_key)
        if found is not None:
            return found
        gang = select_gang_paper(k, m, idle, self._group, self._group_model)
        assert gang is not None, "a candidate task always has enough idle servers"
        after = (self._group, self._group_model)
        if not gang.reused:
            group, group_model = replace_groups(self._group, self._group_model, gang.members, m)
            after = (tuple(group), tuple(group_model))
        return self._selections.put(memo_key, (gang, after))

    def _occupy(self, gang: Gang, model: int, until: float, groups_after: Groups | None) -> None:
        for n in gang.members:
            self._busy_until[n] = until
        if self.cfg.mode == "warm":
            self._load_warm(gang.members, model)
            self._note_resident_models()
        else:  # a new group replaces every group its members belonged to (a reused one changes nothing)
            assert groups_after is not None
            self._group, self._group_model = groups_after

    def _load_warm(self, members: tuple[int, ...], model: int) -> None:
        for n in members:
            row = self._last_used[n]
            if row[model] == NEVER_USED:
                resident = [mm for mm in range(1, len(row)) if row[mm] != NEVER_USED]
                if len(resident) >= self._slots[n]:
                    evict = min(resident, key=lambda mm: (row[mm], mm))  # least recently used
                    row[evict] = NEVER_USED
            row[model] = self._now

    def _record(
        self, wait: float, init: float, run: float, quality: float, steps: int, reward: float, reloaded: bool
    ) -> None:
        c, s = self._counts, self._sums
        c["launched"] += 1
        c["reloads"] += reloaded
        c["below_threshold"] += quality < self.cfg.reward.quality_threshold
        s["sum_response_s"] += wait + init + run
        s["sum_wait_s"] += wait
        s["sum_init_s"] += init
        s["sum_run_s"] += run
        s["sum_quality"] += quality
        s["sum_steps"] += steps
        self._total_reward += reward

    def _record_slo(self, response: float, patches: int) -> None:
        for j, limits in enumerate(self._slo_limits):
            self._slo_met[j] += response <= limits[patches]

    def _after_launch(self) -> None:
        if self._counts["launched"] == self.cfg.tasks_per_episode:
            self._terminated = True
        else:
            self._settle(after_wait=False)

    def _settle(self, after_wait: bool) -> None:
        """Move time forward: one tick, or (event-driven) to the next instant where a launch is possible.

        after_wait: the scheduler chose to wait, so time must move at least to the next event.
        """
        if self.cfg.tick_s is not None:
            if after_wait:
                self._tick += 1
                self._now = self._tick * self.cfg.tick_s
                self._truncated = self._now > self.cfg.time_limit_s
                self._admit_arrivals()
            return
        if after_wait and not self._next_event(recheck=True):
            return
        while not self._launch_feasible():
            if not self._next_event():
                return

    def _next_event(self, recheck: bool = False) -> bool:
        """Jump to the next arrival or gang finish (or the decision timer after a wait); False (and
        truncated) past the time limit."""
        now = self._now
        nxt = now + self.cfg.recheck_s if recheck else math.inf
        if self._arrived < len(self._arrival):
            nxt = min(nxt, self._arrival[self._arrived])
        for b in self._busy_until:
            if now < b < nxt:
                nxt = b
        for start, pending in zip(self._down_start, self._down_pending, strict=True):
            if pending and start < nxt:  # a server going down is an event: it may block a launch
                nxt = start
        if nxt > self.cfg.time_limit_s:
            self._now = max(now, min(nxt, self.cfg.time_limit_s))
            self._truncated = True
            self._admit_arrivals()
            return False
        self._now = nxt
        self._admit_arrivals()
        return True

    # ----- outputs -----------------------------------------------------------------------------------
    def view(self) -> ClusterView:
        """The state at this decision epoch, unnormalised (what the live aggregator also builds)."""
        now = self._now
        idle = self._idle()
        waiting = self._waiting()
        visible = waiting[: self.cfg.visible_queue]
        sizes = group_sizes(self._group)
        return ClusterView(
            now=now,
            idle=idle,
            remaining_s=[max(b - now, 0.0) for b in self._busy_until],
            group_size=[sizes.get(g, 0) for g in self._group],
            speed=self._speeds,
            resident=self._resident_models(),
            task_waiting_s=[now - self._arrival[t] for t in visible],
            task_patches=[self._patches[t] for t in visible],
            task_model=[self._model[t] for t in visible],
            task_reusable=self._reusable_tasks(visible, idle),
            task_class=[self._slo_class[t] for t in visible],
            n_waiting=len(waiting),
            n_arrived=self._n_arrived(),
            n_launched=self._counts["launched"],
            slots=self._slots,
        )

    def _observation(self) -> Observation:
        """`encode_one(self.view(), spec)`, built from token rows (tests hold the two equal); also
        notes the idle servers for the next step."""
        cfg, tables = self.cfg, self._tables
        now = self._now
        busy = self._busy_until
        idle = self._idle_now = tuple([b <= now for b in busy])
        n_idle = self._n_idle_now = sum(idle)
        ready, server_codes = self._epoch(idle)
        visible = self._queue[: cfg.visible_queue]
        patches, code_base = self._patches, self._task_code_base
        # TokenTables code: key * 8 + visible * 4 + reusable * 2 + feasible; 0 for an empty slot.
        task_codes = [
            code_base[t] + ((ready >> (code_base[t] >> 3)) & 1) * 2 + (patches[t] <= n_idle) for t in visible
        ]
        task_codes += [0] * (cfg.visible_queue - len(visible))
        tasks = tables.task_rows.take(task_codes, axis=0)
        arrival, scale = self._arrival, TIME_SCALE_S
        tasks[: len(visible), T_IDX["waiting"]] = [(now - arrival[t]) / scale for t in visible]
        if cfg.slo_classes is not None:  # obs.SLO_TASK_FEATURES: class and time left to the deadline
            classes, limits = self._slo_class, self._class_limits
            tasks[: len(visible), T_IDX["interactive"]] = [classes[t] == 0 for t in visible]
            tasks[: len(visible), T_IDX["slack"]] = [
                (limits[classes[t]][patches[t]] - (now - arrival[t])) / scale for t in visible
            ]
        servers = tables.server_rows.take(server_codes, axis=0)
        remaining = S_IDX["remaining"]  # 0 in the rows; only busy servers need a value
        for n, until in enumerate(busy):
            if until > now:
                servers[n, remaining] = (until - now) / scale
        spec = self.spec_obs
        glob = (
            now / spec.time_limit_s,
            n_idle / cfg.n_servers,
            len(self._queue) / spec.visible_queue,
            self._arrived / spec.tasks_per_episode,
            self._counts["launched"] / spec.tasks_per_episode,
        )
        return {"servers": servers, "tasks": tasks, "globals": np.array(glob, dtype=np.float32)}

    def reference_observation(self) -> Observation:
        """`encode_one(self.view(), spec)`: the plain route; tests hold `_observation` to it."""
        return encode_one(self.view(), self.spec_obs)

    def episode_stats(self) -> EpisodeStats:
        n_arrived = self._n_arrived()
        lb = sum(
            self._profile.step_s[self._patches[t]] * self._lb_steps / max(self._base_speeds)
            for t in range(n_arrived)
        )
        return EpisodeStats(
            arrived=n_arrived,
            total_reward=self._total_reward,
            sum_lower_bound_s=lb,
            end_time_s=self._now,
            makespan_s=max(self._now, self._last_finish),
            **dict(zip(SLO_FIELDS, self._slo_met, strict=True)),
            class0_arrived=n_arrived - sum(self._slo_class[:n_arrived]),
            class0_met=self._class_met[0],
            class1_arrived=sum(self._slo_class[:n_arrived]),
            class1_met=self._class_met[1],
            **self._counts,
            **self._sums,
        )

    def fork(self, rng: np.random.Generator | None = None) -> ClusterEnv:
        """An independent copy of this environment at this decision epoch, for lookahead.

        With `rng`, the tasks that have not arrived yet are redrawn from the workload's distribution
        (Poisson arrivals from now on, which is exact by memorylessness; patches and models afresh), so
        a lookahead sees a possible future rather than this episode's real one. Without it the copy
        keeps the real future (tests use this to check that a fork follows the original exactly).
        """
        twin = copy.copy(self)
        names = (
            "_arrival",
            "_patches",
            "_model",
            "_slo_class",
            "_key",
            "_task_code_base",
            "_queue",
            "_busy_until",
            "_speeds",
            "_server_base",
            "_down_pending",
        )
        for name in names:
            setattr(twin, name, list(getattr(self, name)))
        twin._last_used = [list(row) for row in self._last_used]
        twin._counts, twin._sums = dict(self._counts), dict(self._sums)
        twin._slo_met = list(self._slo_met)
        twin._class_met = list(self._class_met)
        if self.cfg.mode == "warm":
            twin._resident_bits = list(self._resident_bits)
        if rng is not None:
            twin._redraw_future(rng)
        return twin

    def _redraw_future(self, rng: np.random.Generator) -> None:
        first, n = self._arrived, self.cfg.tasks_per_episode
        if first >= n:
            return
        drawn = sample_workload(rng, self.cfg)
        gaps = rng.exponential(1.0 / self.cfg.arrival_rate, n - first)
        per_size = self._tables.keys_per_size
        for t, arrival in zip(range(first, n), (self._now + np.cumsum(gaps)).tolist(), strict=True):
            patches, model = int(drawn.patches[0, t]), int(drawn.model[0, t])
            self._arrival[t], self._patches[t], self._model[t] = arrival, patches, model
            self._slo_class[t] = int(drawn.slo_class[0, t])
            self._key[t] = patches * per_size + model
            self._task_code_base[t] = self._key[t] * 8 + 4

    @property
    def now(self) -> float:
        return self._now

    def render(self) -> str:
        lines = [f"t={self._now:.2f}s"]
        idle = self._idle()
        for n in range(self.cfg.n_servers):
            state = "idle" if idle[n] else f"busy {self._busy_until[n] - self._now:.1f}s"
            lines.append(f"  server {n}: {state} group={self._group[n]} model={self._group_model[n]}")
        for t in self._visible():
            lines.append(f"  task {t}: k={self._patches[t]} waited {self._now - self._arrival[t]:.1f}s")
        return "\n".join(lines)
