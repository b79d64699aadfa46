"""Invariants of the single environment, checked on random episodes (hypothesis draws the cases).

The checks re-derive what must hold from the launch log and the workload, independently of the
simulator's own bookkeeping: time, exclusive servers, gangs, launches, response, and the reload rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.sim.env import ClusterEnv


@dataclass
class GroupTracker:
    """Paper reload rule, restated: a gang reuses a model only if its servers are exactly one group
    that ran together before and no member has since joined another group."""

    intact: dict[frozenset[int], int] = field(default_factory=dict)  # group -> model

    def expects_reload(self, members: frozenset[int], model: int) -> bool:
        return self.intact.get(members) != model

    def launched(self, members: frozenset[int], model: int, reloaded: bool) -> None:
        if reloaded:
            self.intact = {g: m for g, m in self.intact.items() if not g & members}
            self.intact[members] = model


configs = st.one_of(
    st.builds(
        paper_config,
        n_servers=st.sampled_from([4, 8, 12]),
        arrival_rate=st.sampled_from([0.01, 0.05, 0.15, 0.5]),
        tick_s=st.sampled_from([None, None, 0.5]),
        max_decisions=st.just(400),
    ),
    st.builds(
        warm_config,
        n_servers=st.sampled_from([4, 8]),
        arrival_rate=st.sampled_from([0.05, 0.2]),
        models_per_server=st.sampled_from([1, 2]),
    ),
)


def run_checked_episode(cfg: SimConfig, seed: int, execute_prob: float) -> None:
    env = ClusterEnv(cfg)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    workload = env._workload
    assert workload is not None
    arrival, patches, model = workload.arrival_s[0], workload.patches[0], workload.model[0]
    profile, speeds = cfg.profile, cfg.speeds
    busy_until = [0.0] * cfg.n_servers
    tracker = GroupTracker()
    launched: set[int] = set()
    now = env.now
    info: dict = {}
    while True:
        view = env.view()
        action = rng.uniform(-1, 1, cfg.action_dim)
        action[0] = 1.0 if rng.random() < execute_prob else -1.0
        _, reward, terminated, truncated, info = env.step(action)
        assert env.now >= now, "time went back"
        assert env.now <= cfg.time_limit_s + (cfg.tick_s or 0.0)
        if info["launched"]:
            task, members = info["task"], frozenset(info["gang"])
            k, m = int(patches[task]), int(model[task])
            assert task not in launched, "a task launched twice"
            launched.add(task)
            assert arrival[task] <= now, "a task launched before it arrived"
            assert len(members) == k, "gang size differs from the task's patches"
            assert all(busy_until[n] <= now for n in members), "a server runs two tasks at once"
            assert info["wait_s"] == now - arrival[task]
            slowest = min(speeds[n] for n in members)
            assert info["run_s"] == profile.step_s[k] * info["steps"] / slowest
            assert info["response_s"] == info["wait_s"] + info["init_s"] + info["run_s"]
            if cfg.mode == "paper":
                assert info["reloaded"] == tracker.expects_reload(members, m)
                tracker.launched(members, m, info["reloaded"])
                assert info["init_s"] == (profile.init_s[k] if info["reloaded"] else 0.0)
            else:
                had_model = all(m in view.resident[n] for n in members)
                assert info["reloaded"] == (not had_model)
                assert info["init_s"] == (profile.init_s[k] if info["reloaded"] else profile.group_setup_s)
                assert all(len(models) <= cfg.models_per_server for models in env.view().resident)
            finish = now + info["init_s"] + info["run_s"]
            for n in members:  # the gang starts and finishes together
                busy_until[n] = finish
            assert reward > 0
        else:
            assert reward == 0.0
        now = env.now
        if terminated or truncated:
            break
    stats = info["episode"]
    arrived = int(np.sum(arrival <= env.now))
    assert stats.launched == len(launched)
    assert stats.arrived == arrived
    assert stats.unserved == arrived - len(launched) >= 0
    if terminated:
        assert len(launched) == cfg.tasks_per_episode


@settings(max_examples=40, deadline=None)
@given(cfg=configs, seed=st.integers(0, 2**31 - 1), execute_prob=st.sampled_from([0.3, 0.8, 1.0]))
def test_episode_invariants(cfg: SimConfig, seed: int, execute_prob: float) -> None:
    run_checked_episode(cfg, seed, execute_prob)


def test_always_executing_serves_every_task_at_high_load() -> None:
    cfg = paper_config(4, 0.5)
    env = ClusterEnv(cfg)
    env.reset(seed=3)
    action = np.ones(cfg.action_dim)
    while True:
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and info["episode"].launched == cfg.tasks_per_episode


def test_event_driven_epochs_skip_instants_without_a_possible_launch() -> None:
    cfg = SimConfig(n_servers=4, patch_choices=(4,), arrival_rate=0.05)
    env = ClusterEnv(cfg)
    env.reset(seed=0)
    action = np.ones(cfg.action_dim)
    _, _, _, _, info = env.step(action)  # all four servers now run one task
    assert info["launched"]
    # The next decision is when that gang finishes, not at some arrival before it.
    assert env.now == info["init_s"] + info["run_s"]
    assert all(env.view().idle)


def test_waiting_moves_to_the_next_event_or_the_decision_timer() -> None:
    for recheck_s in (1e6, 0.5):
        cfg = paper_config(4, 0.05, recheck_s=recheck_s)
        env = ClusterEnv(cfg)
        env.reset(seed=0)
        next_arrival = env._workload.arrival_s[0][cfg.initial_tasks]
        _, reward, _, _, info = env.step(-np.ones(cfg.action_dim))
        assert reward == 0.0 and not info["launched"]
        # Nothing runs, so the next event is the next arrival, unless the timer fires first.
        assert env.now == min(next_arrival, recheck_s)


def test_waiting_with_nothing_pending_does_not_end_the_episode() -> None:
    cfg = paper_config(4, 0.05, initial_tasks=32)  # everything has arrived at t=0
    env = ClusterEnv(cfg)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(-np.ones(cfg.action_dim))
    assert not (terminated or truncated) and env.now == cfg.recheck_s
