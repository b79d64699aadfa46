"""B simulated clusters stepped together with array code.

Same rules as `ClusterEnv` (read that first: it is the plain statement), over arrays with a leading batch
dimension. Each environment owns its seeded generator and resets itself when its episode ends; finished
episodes come back as rows of statistics. Tests check that B environments here follow exactly the
trajectories of B single environments given the same seeds and actions.

The queue is kept as a window: the first Q waiting tasks (task indices, ascending, padded with the
sentinel T) plus a pointer `next_unseen`. Only visible tasks can be launched, so every task at or past
the pointer is still waiting, and the waiting set is window + [next_unseen, n_arrived). This keeps each
step's work proportional to Q and N, not to the episode's task count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import TASK_FEATURES, Observation, ObservationSpec, RawView, encode, static_task_tokens
from policy_models.profiles import min_steps_for_quality, quality_table
from policy_models.reward import launch_reward
from policy_models.sim.stats import STAT_FIELDS, EpisodeStats
from policy_models.workload import make_rng, uniforms_per_episode, workload_from_uniforms

COL = {name: i for i, name in enumerate(STAT_FIELDS)}
EPISODES_PER_DRAW = 16


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


class BatchedClusterSim:
    def __init__(self, config: SimConfig, seeds: Sequence[int]) -> None:
        cfg = config
        self.cfg = cfg
        self.spec = ObservationSpec.from_config(cfg)
        self.batch = len(seeds)
        self.rngs = [make_rng(s) for s in seeds]
        # Workload randomness for the next few episodes of each env, drawn in one generator call: the
        # same stream as one draw per episode (so trajectories still match ClusterEnv), far fewer calls.
        self._draws = np.zeros((len(seeds), EPISODES_PER_DRAW, uniforms_per_episode(config)))
        self._next_draw = np.full(len(seeds), EPISODES_PER_DRAW)
        b, n, t, q = self.batch, cfg.n_servers, cfg.tasks_per_episode, cfg.visible_queue
        self._rows = np.arange(b)
        self._server_ix = np.arange(n)
        self._slot_ix = np.arange(q)
        self._model_ids = np.arange(1, cfg.n_models + 1)
        self._step_s, self._init_s = (np.nan_to_num(a) for a in cfg.profile.lookup_arrays(cfg.max_patches))
        self._quality = quality_table(cfg.max_steps)
        self._speed = np.asarray(cfg.speeds, dtype=np.float64)
        self._warm_speed_frac = self._speed / (2.0 * self._speed.max())
        lb_steps = min_steps_for_quality(cfg.reward.quality_threshold, cfg.max_steps)
        self._lb_run = self._step_s * lb_steps / self._speed.max()
        self.now = np.zeros(b)
        self.tick = np.zeros(b, dtype=np.int64)
        self.busy_until = np.zeros((b, n))
        self.group = np.full((b, n), -1, dtype=np.int64)
        self.group_model = np.zeros((b, n), dtype=np.int64)
        self.last_used = np.full((b, n, cfg.n_models + 1), -np.inf)
        # Task arrays carry a sentinel column T: arrival inf, patches and model 0.
        self.arrival = np.full((b, t + 1), np.inf)
        self.patches = np.zeros((b, t + 1), dtype=np.int64)
        self.model = np.zeros((b, t + 1), dtype=np.int64)
        # The observation columns fixed per task, kept so each decision only gathers them.
        self.task_tokens = np.zeros((b, t + 1, len(TASK_FEATURES)), dtype=np.float32)
        self._row_offset = np.arange(b)[:, None] * (t + 1)  # flat index of each env's task 0
        self.window = np.full((b, q), t, dtype=np.int64)
        self.win_len = np.zeros(b, dtype=np.int64)
        self.next_unseen = np.zeros(b, dtype=np.int64)
        self.n_arrived = np.zeros(b, dtype=np.int64)
        self.stats = np.zeros((b, len(STAT_FIELDS)))
        self.terminated = np.zeros(b, dtype=bool)
        self.truncated = np.zeros(b, dtype=bool)

    # ----- lifecycle ---------------------------------------------------------------------------------
    def reset(self) -> Observation:
        self._reset_envs(self._rows)
        return self._observe()

    def _reset_envs(self, envs: np.ndarray) -> None:
        cfg, t = self.cfg, self.cfg.tasks_per_episode
        wl = workload_from_uniforms(self._take_draws(envs), cfg)
        self.arrival[envs, :t], self.patches[envs, :t], self.model[envs, :t] = (
            wl.arrival_s,
            wl.patches,
            wl.model,
        )
        self.task_tokens[envs, :t] = static_task_tokens(wl.patches, wl.model, self.spec)
        self.now[envs] = 0.0
        self.tick[envs] = 0
        self.busy_until[envs] = 0.0
        self.group[envs] = -1
        self.group_model[envs] = 0
        self.last_used[envs] = -np.inf
        self.window[envs] = t
        self.win_len[envs] = 0
        self.next_unseen[envs] = 0
        self.n_arrived[envs] = np.count_nonzero(wl.arrival_s <= 0.0, axis=1)
        self.stats[envs] = 0.0
        self.terminated[envs] = False
        self.truncated[envs] = False
        self._refill(envs)
        self._settle(envs, after_wait=False)

    def _take_draws(self, envs: np.ndarray) -> np.ndarray:
        """(E, uniforms per episode): each env's next episode of workload randomness."""
        empty = envs[self._next_draw[envs] == EPISODES_PER_DRAW]
        shape = self._draws.shape[1:]
        for e in empty.tolist():
            self._draws[e] = self.rngs[e].random(shape)
        self._next_draw[empty] = 0
        draws = self._draws[envs, self._next_draw[envs]]
        self._next_draw[envs] += 1
        return draws

    def step(self, actions: np.ndarray) -> StepResult:
        cfg = self.cfg
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.batch, cfg.action_dim) or not np.isfinite(actions).all():
            raise ValueError(f"actions must be finite, shape {(self.batch, cfg.action_dim)}")
        actions = np.clip(actions, -1.0, 1.0)
        self.stats[:, COL["decisions"]] += 1
        scores = np.where(self._feasible, actions[:, 2:], -np.inf)
        slot = scores.argmax(1)
        launch = (actions[:, 0] > 0.0) & self._feasible.any(1)
        reward = np.zeros(self.batch)
        reloaded = np.zeros(self.batch, dtype=bool)
        steps = np.zeros(self.batch, dtype=np.int64)
        envs = np.flatnonzero(launch)
        if envs.size:
            x = cfg.min_steps + (actions[envs, 1] + 1.0) * 0.5 * (cfg.max_steps - cfg.min_steps)
            steps[envs] = np.clip(np.floor(x + 0.5), cfg.min_steps, cfg.max_steps).astype(np.int64)
            reward[envs], reloaded[envs] = self._launch(envs, slot[envs], steps[envs])
            self._after_launch(envs)
        waited = np.flatnonzero(~launch)
        if waited.size:
            self._settle(waited, after_wait=True)
        self.truncated |= ~self.terminated & (self.stats[:, COL["decisions"]] >= cfg.max_decisions)
        terminated, truncated = self.terminated.copy(), self.truncated.copy()
        done_envs, done_stats = self._finish_episodes(terminated | truncated)
        obs = self._observe()
        return StepResult(obs, reward, terminated, truncated, launch, reloaded, steps, done_envs, done_stats)

    def _finish_episodes(self, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        envs = np.flatnonzero(done)
        if not envs.size:
            return envs, np.zeros((0, len(STAT_FIELDS)))
        t = self.cfg.tasks_per_episode
        arrived = self.arrival[envs, :t] <= self.now[envs, None]
        self.stats[envs, COL["arrived"]] = self.n_arrived[envs]
        lb = np.where(arrived, self._lb_run[self.patches[envs, :t]], 0.0)
        self.stats[envs, COL["sum_lower_bound_s"]] = lb.sum(1)
        self.stats[envs, COL["end_time_s"]] = self.now[envs]
        rows = self.stats[envs].copy()
        self._reset_envs(envs)
        return envs, rows

    # ----- the queue window --------------------------------------------------------------------------
    def _refill(self, envs: np.ndarray) -> None:
        """Append newly arrived tasks to the window while it has room."""
        q = self.cfg.visible_queue
        length, nxt = self.win_len[envs], self.next_unseen[envs]
        count = np.minimum(q - length, self.n_arrived[envs] - nxt)
        j = self._slot_ix
        fill = (j >= length[:, None]) & (j < (length + count)[:, None])
        self.window[envs] = np.where(fill, (nxt - length)[:, None] + j, self.window[envs])
        self.win_len[envs] = length + count
        self.next_unseen[envs] = nxt + count

    def _remove_from_window(self, envs: np.ndarray, slot: np.ndarray) -> None:
        win = self.window[envs]
        shifted = np.concatenate([win[:, 1:], np.full((len(envs), 1), self.cfg.tasks_per_episode)], 1)
        self.window[envs] = np.where(self._slot_ix >= slot[:, None], shifted, win)
        self.win_len[envs] -= 1
        self._refill(envs)

    # ----- the launch --------------------------------------------------------------------------------
    def _launch(self, envs: np.ndarray, slot: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        task = self.window[envs, slot]
        k = self.patches[envs, task]
        m = self.model[envs, task]
        now = self.now[envs]
        idle = self.busy_until[envs] <= now[:, None]
        if cfg.mode == "paper":
            members, reused = self._gang_paper(envs, k, m, idle)
            init = np.where(reused, 0.0, self._init_s[k])
        else:
            members, reused = self._gang_warm(envs, k, m, idle)
            init = np.where(reused, cfg.profile.group_setup_s, self._init_s[k])
        slowest = np.where(members, self._speed, np.inf).min(1)
        run = self._step_s[k] * steps / slowest
        until = now + init + run
        self.busy_until[envs] = np.where(members, until[:, None], self.busy_until[envs])
        self._remove_from_window(envs, slot)
        wait = now - self.arrival[envs, task]
        quality = self._quality[steps]
        reward = launch_reward(wait, init + run, self._queue_wait(envs, now), quality, cfg.reward)
        self._record(envs, wait, init, run, quality, steps, reward, ~reused)
        return reward, ~reused

    def _queue_wait(self, envs: np.ndarray, now: np.ndarray) -> np.ndarray:
        """Mean waiting time of the visible queue after the launch (0 when empty)."""
        win = self.window[envs]
        total = np.where(
            win < self.cfg.tasks_per_episode, now[:, None] - self.arrival[envs[:, None], win], 0.0
        )
        count = self.win_len[envs]
        return np.where(count > 0, total.sum(1) / np.maximum(count, 1), 0.0)

    def _record(
        self,
        envs: np.ndarray,
        wait: np.ndarray,
        init: np.ndarray,
        run: np.ndarray,
        quality: np.ndarray,
        steps: np.ndarray,
        reward: np.ndarray,
        reloaded: np.ndarray,
    ) -> None:
        delta = np.zeros((len(envs), len(STAT_FIELDS)))
        columns = {
            "launched": 1.0,
            "reloads": reloaded,
            "below_threshold": quality < self.cfg.reward.quality_threshold,
            "sum_response_s": wait + init + run,
            "sum_wait_s": wait,
            "sum_init_s": init,
            "sum_run_s": run,
            "sum_quality": quality,
            "sum_steps": steps,
            "total_reward": reward,
        }
        for name, value in columns.items():
            delta[:, COL[name]] = value
        self.stats[envs] += delta

    def _select_first(self, key: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Mask of the k smallest keys per row (ties broken by lower index)."""
        order = np.argsort(key, axis=1, kind="stable")
        chosen = np.zeros(key.shape, dtype=bool)
        np.put_along_axis(chosen, order, self._server_ix < k[:, None], axis=1)
        return chosen

    def _group_sizes(self, group: np.ndarray) -> np.ndarray:
        """(E,N): size of the intact group led by server g (0 where g leads none)."""
        e, n = group.shape
        flat = (np.arange(e)[:, None] * n + group)[group >= 0]
        return np.bincount(flat, minlength=e * n).reshape(e, n)

    def _gang_paper(
        self, envs: np.ndarray, k: np.ndarray, m: np.ndarray, idle: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self.cfg.n_servers
        group, gmodel = self.group[envs], self.group_model[envs]
        grouped = group >= 0
        size = self._group_sizes(group)
        reusable = (size == k[:, None]) & idle & (gmodel == m[:, None])
        reused = reusable.any(1)
        leader = reusable.argmax(1)
        reuse_members = group == leader[:, None]
        my_size = np.take_along_axis(size, np.maximum(group, 0), axis=1)
        remainder = k - (idle & ~grouped).sum(1)
        rank = np.where(my_size >= remainder[:, None], my_size, 2 * n - my_size)  # selector._group_rank
        key = np.where(grouped, ((2 * n + 1 + rank) * n + group) * n + self._server_ix, self._server_ix)
        key = np.where(idle, key, np.iinfo(np.int64).max)
        new_members = self._select_first(key, k)
        members = np.where(reused[:, None], reuse_members, new_members)
        fresh = ~reused
        if fresh.any():
            self._form_groups(envs[fresh], group[fresh], gmodel[fresh], new_members[fresh], m[fresh])
        return members, reused

    def _form_groups(
        self, envs: np.ndarray, group: np.ndarray, gmodel: np.ndarray, members: np.ndarray, m: np.ndarray
    ) -> None:
        """New groups replace every group their members belonged to (their processes are ended)."""
        e, n = group.shape
        touched = np.zeros((e, n), dtype=bool)
        rows, cols = np.nonzero(members & (group >= 0))
        touched[rows, group[rows, cols]] = True
        dissolve = (group >= 0) & np.take_along_axis(touched, np.maximum(group, 0), axis=1)
        group = np.where(dissolve, -1, group)
        gmodel = np.where(dissolve, 0, gmodel)
        leader = members.argmax(1)
        self.group[envs] = np.where(members, leader[:, None], group)
        self.group_model[envs] = np.where(members, m[:, None], gmodel)

    def _gang_warm(
        self, envs: np.ndarray, k: np.ndarray, m: np.ndarray, idle: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        last = self.last_used[envs]
        resident = last != -np.inf
        holds = np.take_along_axis(resident, m[:, None, None], axis=2)[..., 0]
        free = resident[..., 1:].sum(-1) < self.cfg.models_per_server
        key = 4.0 * holds + 2.0 * (free & ~holds) + self._warm_speed_frac
        members = self._select_first(np.where(idle, -key, np.inf), k)
        reused = ~(members & ~holds).any(1)
        # Members lacking the model load it, evicting their least recently used model when full.
        loads = members & ~holds & ~free
        if loads.any():
            rows, cols = np.nonzero(loads)
            lru = np.where(resident[rows, cols, 1:], last[rows, cols, 1:], np.inf).argmin(1) + 1
            last[rows, cols, lru] = -np.inf
        rows, cols = np.nonzero(members)
        last[rows, cols, m[rows]] = self.now[envs][rows]
        self.last_used[envs] = last
        return members, reused

    # ----- time --------------------------------------------------------------------------------------
    def _after_launch(self, envs: np.ndarray) -> None:
        done = self.stats[envs, COL["launched"]] == self.cfg.tasks_per_episode
        self.terminated[envs[done]] = True
        self._settle(envs[~done], after_wait=False)

    def _launch_feasible(self, envs: np.ndarray) -> np.ndarray:
        n_idle = (self.busy_until[envs] <= self.now[envs, None]).sum(1)
        win = self.window[envs]
        fits = self.patches[envs[:, None], win] <= n_idle[:, None]
        return (fits & (win < self.cfg.tasks_per_episode)).any(1)

    def _settle(self, envs: np.ndarray, after_wait: bool) -> None:
        """Advance time: one tick, or to the next instant where a launch is possible (see ClusterEnv)."""
        cfg = self.cfg
        if cfg.tick_s is not None:
            if after_wait:
                self.tick[envs] += 1
                self.now[envs] = self.tick[envs] * cfg.tick_s
                self.truncated[envs] = self.now[envs] > cfg.time_limit_s
                self.n_arrived[envs] = (self.arrival[envs] <= self.now[envs, None]).sum(1)
                self._refill(envs)
            return
        if after_wait:
            timer = self.now[envs] + cfg.recheck_s
            envs = envs[self._jump(envs, np.minimum(self._next_event_time(envs), timer))]
        envs = envs[~self._launch_feasible(envs)]
        if envs.size:
            self._jump(envs, self._next_feasible_time(envs))

    def _next_finish(self, envs: np.ndarray) -> np.ndarray:
        busy = self.busy_until[envs]
        return np.where(busy > self.now[envs, None], busy, np.inf).min(1)

    def _next_event_time(self, envs: np.ndarray) -> np.ndarray:
        """The next arrival or gang finish."""
        return np.minimum(self.arrival[envs, self.n_arrived[envs]], self._next_finish(envs))

    def _next_feasible_time(self, envs: np.ndarray) -> np.ndarray:
        """While no launch is possible, the first instant one becomes possible.

        Until then nothing launches, so the window only grows by the next arrivals that fit in it, and
        the idle count only grows: r servers are idle from the r-th earliest release time on. A task
        needing p servers is startable from max(its arrival, that time for r=p). ClusterEnv reaches the
        same instant by stepping through every event in between.
        """
        t, q = self.cfg.tasks_per_episode, self.cfg.visible_queue
        rows = envs[:, None]
        release = np.sort(np.maximum(self.busy_until[envs], self.now[envs, None]), axis=1)
        release = np.concatenate([self.now[envs, None], release], axis=1)  # index r = p servers idle
        upcoming = np.minimum(self.n_arrived[rows] + self._slot_ix, t)
        enters = (self._slot_ix < (q - self.win_len[envs])[:, None]) & (upcoming < t)
        candidates = np.concatenate([self.window[envs], np.where(enters, upcoming, t)], axis=1)
        need = np.take_along_axis(release, self.patches[rows, candidates], axis=1)
        start = np.maximum(self.arrival[rows, candidates], need)
        return np.where(candidates < t, start, np.inf).min(1)

    def _jump(self, envs: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Move to time `nxt`; returns which envs are still within the time limit (the rest truncate)."""
        now, limit = self.now[envs], self.cfg.time_limit_s
        beyond = nxt > limit
        self.now[envs] = np.where(beyond, np.maximum(now, np.minimum(nxt, limit)), nxt)
        self.truncated[envs[beyond]] = True
        self.n_arrived[envs] = (self.arrival[envs] <= self.now[envs, None]).sum(1)
        self._refill(envs)
        return ~beyond

    # ----- observation -------------------------------------------------------------------------------
    def raw_view(self) -> RawView:
        cfg = self.cfg
        b, n = self.batch, cfg.n_servers
        now = self.now
        idle = self.busy_until <= now[:, None]
        win = self.window
        rows = self._rows[:, None]
        valid = win < cfg.tasks_per_episode
        flat = self._row_offset + win
        patches = self.patches.ravel().take(flat)
        model = self.model.ravel().take(flat)
        waiting_s = np.where(valid, now[:, None] - self.arrival.ravel().take(flat), 0.0)
        if cfg.mode == "warm":
            resident = self.last_used[..., 1:] != -np.inf
            holders_idle = np.zeros((b, cfg.n_models + 1), dtype=np.int64)
            holders_idle[:, 1:] = (resident & idle[..., None]).sum(1)
            reusable = valid & (holders_idle[rows, model] >= patches)
            group_size = np.zeros((b, n), dtype=np.int64)
        else:
            size = self._group_sizes(self.group)
            grouped = self.group >= 0
            group_size = np.where(grouped, np.take_along_axis(size, np.maximum(self.group, 0), 1), 0)
            resident = self.group_model[..., None] == self._model_ids
            # table[b, size, model]: an idle intact group of that size holding that model exists.
            table = np.zeros((b, cfg.max_patches + 1, cfg.n_models + 1), dtype=bool)
            lead_rows, leaders = np.nonzero((size > 0) & idle)
            table[lead_rows, size[lead_rows, leaders], self.group_model[lead_rows, leaders]] = True
            reusable = valid & table[rows, patches, model]
        self._feasible = valid & (patches <= idle.sum(1, keepdims=True))
        return RawView(
            now=now,
            idle=idle,
            remaining_s=np.maximum(self.busy_until - now[:, None], 0.0),
            group_size=group_size,
            speed=np.broadcast_to(self._speed, (b, n)),
            resident=resident,
            task_valid=valid,
            task_waiting_s=waiting_s,
            task_patches=patches,
            task_model=model,
            task_reusable=reusable,
            n_waiting=self.win_len + self.n_arrived - self.next_unseen,
            n_arrived=self.n_arrived,
            n_launched=self.stats[:, COL["launched"]].astype(np.int64),
            task_static=self.task_tokens.reshape(-1, len(TASK_FEATURES)).take(flat, axis=0),
        )

    def _observe(self) -> Observation:
        return encode(self.raw_view(), self.spec)
