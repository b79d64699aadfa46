"""One simulated cluster as a `gymnasium.Env`, written as plain scalar code.

This is the readable statement of the simulator's rules; `BatchedClusterSim` runs the same rules over
many environments with array code and is tested to give identical trajectories.

Time model. The state is a pure function of the current time and the launches so far: a server is idle
when its busy-until time has passed, a task is queued once its arrival time has passed. Decision epochs
are event-driven by default: after a launch the next decision comes at the same instant; "wait" moves
to the next event (an arrival or a gang finishing) or by the decision timer `recheck_s`, whichever comes
first, and instants where no launch is possible are skipped.
With `tick_s` set, "wait" moves exactly one tick instead, as in the paper's reference.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from policy_models.config import SimConfig
from policy_models.obs import ClusterView, Observation, ObservationSpec, encode_one
from policy_models.profiles import min_steps_for_quality, quality_of_steps
from policy_models.reward import launch_reward
from policy_models.selector import (
    Gang,
    choose_task,
    decode_execute,
    decode_steps,
    select_gang_paper,
    select_gang_warm,
)
from policy_models.sim.stats import EpisodeStats
from policy_models.workload import Workload, sample_workload

NEVER_USED = -math.inf


def observation_space(spec: ObservationSpec) -> spaces.Dict:
    shapes = spec.shapes
    return spaces.Dict(
        {key: spaces.Box(0.0, np.inf, shape=shape, dtype=np.float32) for key, shape in shapes.items()}
    )


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
        self._speeds = list(config.speeds)
        self._lb_steps = min_steps_for_quality(config.reward.quality_threshold, config.max_steps)
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
        self._queue: list[int] = []  # waiting tasks in arrival order
        self._arrived = 0
        n = cfg.n_servers
        self._now = 0.0
        self._tick = 0
        self._busy_until = [0.0] * n
        self._group = [-1] * n  # paper mode: leader of the intact loaded group, -1 = none
        self._group_model = [0] * n  # paper mode: model loaded in that group
        # warm mode: when each resident model was last used (NEVER_USED = not resident); column 0 unused.
        self._last_used = [[NEVER_USED] * (cfg.n_models + 1) for _ in range(n)]
        self._counts = dict.fromkeys(("launched", "reloads", "below_threshold", "decisions"), 0)
        self._sums = dict.fromkeys(
            ("sum_response_s", "sum_wait_s", "sum_init_s", "sum_run_s", "sum_quality", "sum_steps"), 0.0
        )
        self._total_reward = 0.0
        self._terminated = self._truncated = False
        self._resident_cache: list[list[int]] | None = None
        self._sizes_cache: dict[int, int] | None = None
        self._admit_arrivals()
        self._settle(after_wait=False)
        return self._observation(), {}

    def step(self, action: np.ndarray):
        if self._terminated or self._truncated:
            raise RuntimeError("episode is over: call reset()")
        array = np.asarray(action, dtype=np.float64).reshape(-1)
        values = array.tolist()
        if len(values) != self.cfg.action_dim or not all(map(math.isfinite, values)):
            raise ValueError(f"action must be {self.cfg.action_dim} finite numbers in [-1, 1], got {action}")
        action = array.clip(-1.0, 1.0).tolist()
        self._counts["decisions"] += 1
        info: dict[str, Any] = {"launched": False}
        reward = 0.0
        if decode_execute(action[0]):
            slot = choose_task(action[2:], self._candidates())
            if slot >= 0:
                steps = decode_steps(action[1], self.cfg.min_steps, self.cfg.max_steps)
                reward, info = self._launch(self._visible()[slot], steps)
        if info["launched"]:
            self._after_launch()
        else:
            self._settle(after_wait=True)
        if not self._terminated and self._counts["decisions"] >= self.cfg.max_decisions:
            self._truncated = True
        if self._terminated or self._truncated:
            info["episode"] = self.episode_stats()
        return self._observation(), float(reward), self._terminated, self._truncated, info

    # ----- queries on the state ----------------------------------------------------------------------
    def _n_arrived(self) -> int:
        return self._arrived

    def _waiting(self) -> list[int]:
        return self._queue

    def _visible(self) -> list[int]:
        return self._queue[: self.cfg.visible_queue]

    def _admit_arrivals(self) -> None:
        """Queue every task whose arrival time has passed (call after time moves)."""
        arrival, now = self._arrival, self._now
        while self._arrived < len(arrival) and arrival[self._arrived] <= now:
            self._queue.append(self._arrived)
            self._arrived += 1

    def _idle(self) -> list[bool]:
        now = self._now
        return [b <= now for b in self._busy_until]

    def _candidates(self) -> list[bool]:
        n_idle = sum(self._idle())
        return [self._patches[t] <= n_idle for t in self._visible()]

    def _launch_feasible(self) -> bool:
        now = self._now
        n_idle = sum(b <= now for b in self._busy_until)
        patches = self._patches
        return any(patches[t] <= n_idle for t in self._queue[: self.cfg.visible_queue])

    def _holds(self, server: int, model: int) -> bool:
        if self.cfg.mode == "warm":
            return self._last_used[server][model] != NEVER_USED
        return self._group[server] >= 0 and self._group_model[server] == model

    def _resident_models(self) -> list[list[int]]:
        if self._resident_cache is None:  # changes only when a gang launches
            if self.cfg.mode == "warm":
                rows = self._last_used
                self._resident_cache = [[m for m, used in enumerate(r) if used != NEVER_USED] for r in rows]
            else:
                pairs = zip(self._group, self._group_model, strict=True)
                self._resident_cache = [[m] if g >= 0 else [] for g, m in pairs]
        return self._resident_cache

    def _group_sizes(self) -> dict[int, int]:
        if self._sizes_cache is None:  # changes only when a gang launches
            sizes: dict[int, int] = {}
            for g in self._group:
                if g >= 0:
                    sizes[g] = sizes.get(g, 0) + 1
            self._sizes_cache = sizes
        return self._sizes_cache

    def _reusable_tasks(self, tasks: list[int], idle: list[bool], sizes: dict[int, int]) -> list[bool]:
        """Which tasks could start now without loading their model."""
        if self.cfg.mode == "warm":
            holders = [0] * (self.cfg.n_models + 1)
            for n, ok in enumerate(idle):
                if ok:
                    for m, used in enumerate(self._last_used[n]):
                        holders[m] += used != NEVER_USED
            return [holders[self._model[t]] >= self._patches[t] for t in tasks]
        ready = {(s, self._group_model[g]) for g, s in sizes.items() if idle[g]}
        return [(self._patches[t], self._model[t]) in ready for t in tasks]

    # ----- transitions -------------------------------------------------------------------------------
    def _select_gang(self, task: int) -> Gang | None:
        k, m = self._patches[task], self._model[task]
        idle = self._idle()
        if self.cfg.mode == "paper":
            return select_gang_paper(k, m, idle, self._group, self._group_model)
        slots = self.cfg.models_per_server
        holds = [self._holds(n, m) for n in range(self.cfg.n_servers)]
        free = [sum(1 for u in row[1:] if u != NEVER_USED) < slots for row in self._last_used]
        return select_gang_warm(k, idle, holds, free, self._speeds)

    def _launch(self, task: int, steps: int) -> tuple[float, dict[str, Any]]:
        gang = self._select_gang(task)
        assert gang is not None, "a candidate task always has enough idle servers"
        k, m, now = self._patches[task], self._model[task], self._now
        if gang.reused:
            init = self._profile.group_setup_s if self.cfg.mode == "warm" else 0.0
        else:
            init = self._profile.init_s[k]
        run = self._profile.step_s[k] * steps / min(self._speeds[n] for n in gang.members)
        self._occupy(gang, m, now + init + run)
        self._queue.remove(task)
        wait = now - self._arrival[task]
        queue = self._visible()
        queue_wait = sum(now - self._arrival[t] for t in queue) / len(queue) if queue else 0.0
        quality = quality_of_steps(steps)
        reward = float(launch_reward(wait, init + run, queue_wait, quality, self.cfg.reward))
        self._record(wait, init, run, quality, steps, reward, reloaded=not gang.reused)
        info = {
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

    def _occupy(self, gang: Gang, model: int, until: float) -> None:
        self._resident_cache = self._sizes_cache = None
        for n in gang.members:
            self._busy_until[n] = until
        if self.cfg.mode == "warm":
            self._load_warm(gang.members, model)
        elif not gang.reused:
            # The new group's processes replace every group its members belonged to.
            touched = {self._group[n] for n in gang.members if self._group[n] >= 0}
            for n, g in enumerate(self._group):
                if g in touched:
                    self._group[n], self._group_model[n] = -1, 0
            leader = min(gang.members)
            for n in gang.members:
                self._group[n], self._group_model[n] = leader, model

    def _load_warm(self, members: tuple[int, ...], model: int) -> None:
        for n in members:
            row = self._last_used[n]
            if row[model] == NEVER_USED:
                resident = [mm for mm in range(1, len(row)) if row[mm] != NEVER_USED]
                if len(resident) >= self.cfg.models_per_server:
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
        upcoming = [now + self.cfg.recheck_s] if recheck else []
        if self._arrived < len(self._arrival):
            upcoming.append(self._arrival[self._arrived])
        upcoming.extend(b for b in self._busy_until if b > now)
        nxt = min(upcoming) if upcoming else math.inf
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
        sizes = self._group_sizes()
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
            task_reusable=self._reusable_tasks(visible, idle, sizes),
            n_waiting=len(waiting),
            n_arrived=self._n_arrived(),
            n_launched=self._counts["launched"],
        )

    def _observation(self) -> Observation:
        return encode_one(self.view(), self.spec_obs)

    def episode_stats(self) -> EpisodeStats:
        n_arrived = self._n_arrived()
        lb = sum(
            self._profile.step_s[self._patches[t]] * self._lb_steps / max(self._speeds)
            for t in range(n_arrived)
        )
        return EpisodeStats(
            arrived=n_arrived,
            total_reward=self._total_reward,
            sum_lower_bound_s=lb,
            end_time_s=self._now,
            **self._counts,
            **self._sums,
        )

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
