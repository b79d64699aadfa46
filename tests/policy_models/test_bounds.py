"""The hindsight response floor: exact on small cases worked by hand, never above what a real policy
achieves on the simulator (at that policy's own quality), and tighter than the run-only bound."""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.bounds import run_floor, seed_floor, wait_init_floor
from policy_models.config import paper_config
from policy_models.evaluation import first_episodes
from policy_models.policies import make_policy
from policy_models.profiles import profile_min_steps, profile_quality_table
from policy_models.workload import make_rng, sample_workload

INIT = {1: 24.0, 2: 24.0, 4: 32.0}


def test_alternating_sizes_far_apart_pay_every_reload() -> None:
    # Whole-cluster and single-server tasks 100 s apart: waiting for the next one of the same class
    # costs 100 s, a reload 24-32 s, so every task loads.
    arrival = np.array([0.0, 100.0, 200.0, 300.0])
    patches = np.array([4, 1, 4, 1])
    assert wait_init_floor(arrival, patches, 4, INIT) == pytest.approx(32 + 24 + 32 + 24)


def test_a_short_wait_beats_a_reload() -> None:
    # R at 0, F at 100, R at 101. Switching at each arrival costs 24 + 32 + 24 = 80; letting F wait 1 s
    # and start after the second R (which then reuses the R group) costs 24 + 0 + (1 + 32) = 57.
    arrival = np.array([0.0, 100.0, 101.0])
    patches = np.array([1, 4, 1])
    assert wait_init_floor(arrival, patches, 4, INIT) == pytest.approx(24 + 33)


def test_a_t0_batch_of_both_classes_waits_for_the_first_class_to_load() -> None:
    # Both classes wait at t=0. Small tasks first: they load (24 each); the whole-cluster ones can
    # start only once the first phase's load is done (24 s), then each loads or waits for the group
    # one of them loads (32 s): 2 * 24 + 2 * (24 + 32) = 160. Whole-cluster first costs
    # 2 * 32 + 2 * (32 + 24) = 176.
    arrival = np.zeros(4)
    patches = np.array([4, 1, 4, 2])
    assert wait_init_floor(arrival, patches, 4, INIT) == pytest.approx(160)


def test_without_whole_cluster_tasks_only_the_start_up_loads_count() -> None:
    arrival = np.array([0.0, 10.0, 50.0])
    patches = np.array([1, 2, 4])
    # N=8: no task spans the cluster; each pays what remains of its own init at arrival.
    init = {1: 24.0, 2: 24.0, 4: 32.0, 8: 30.0}
    assert wait_init_floor(arrival, patches, 8, init) == pytest.approx(24 + 14 + 0)


def test_run_floor_meets_the_quality_with_the_fewest_seconds() -> None:
    quality = profile_quality_table("reference", 32)
    step_s = {1: 0.315, 2: 0.15625, 4: 0.14}
    patches = np.array([1, 2, 4, 4])
    floor = run_floor(patches, step_s, quality, 0.26)
    # Giving every task the fewest steps reaching 0.26 is feasible, so the floor is at most its cost;
    # the bound may mix step counts (quality is not concave everywhere) but cannot go far below it.
    uniform = sum(step_s[int(k)] for k in patches) * int(np.argmax(quality >= 0.26))
    assert 0.8 * uniform < floor <= uniform + 1e-9
    # With no quality asked for, each task still runs one step.
    assert run_floor(patches, step_s, quality, 0.0) == pytest.approx(sum(step_s[int(k)] for k in patches))
    with pytest.raises(ValueError, match="above the best quality"):
        run_floor(patches, step_s, quality, 0.5)


def test_the_floor_reads_the_workload_the_evaluation_plays() -> None:
    # The run-only lower bound the simulator records sums each arrived task's fastest run at the
    # threshold's steps: it matches the one computed from the workload `seed_floor` reads.
    cfg = paper_config(4, 0.05)
    seeds = [1000, 1001, 1002]
    lb_steps = profile_min_steps(cfg.profile_name, cfg.reward.quality_threshold, cfg.max_steps)
    for seed, episode in zip(seeds, first_episodes(make_policy("reuse", cfg), cfg, seeds), strict=True):
        workload = sample_workload(make_rng(seed), cfg)
        expected = sum(cfg.profile.step_s[int(k)] * lb_steps for k in workload.patches[0])
        assert episode.arrived == workload.patches.shape[1]
        assert episode.sum_lower_bound_s == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "rate"), [(4, 0.01), (4, 0.09), (8, 0.1), (12, 0.15)])
def test_no_policy_responds_faster_than_the_floor_at_its_own_quality(nodes: int, rate: float) -> None:
    cfg = paper_config(nodes, rate)
    seeds = list(range(2000, 2016))
    checked = 0
    for name in ("reuse", "greedy", "fifo", "random", "harmony", "shipped:eat"):
        for seed, episode in zip(seeds, first_episodes(make_policy(name, cfg), cfg, seeds), strict=True):
            if episode.launched < episode.arrived:
                continue  # the floor is for schedules that serve every task
            floor = seed_floor(cfg, seed, episode.mean_quality)
            assert floor.mean_response_s <= episode.mean_response_s + 1e-9, (name, seed)
            checked += 1
    assert checked >= 80


def test_the_floor_counts_reloads_the_run_only_bound_does_not() -> None:
    cfg = paper_config(4, 0.03)
    for seed in range(1000, 1005):
        floor = seed_floor(cfg, seed, 0.25)
        run_only = floor.run_s / floor.tasks
        # At least the ten tasks waiting at t=0 each pay a 24-32 s load.
        assert floor.mean_response_s > run_only + 10 * 24 / floor.tasks
