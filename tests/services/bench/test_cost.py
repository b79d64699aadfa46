"""The pipeline benchmark's CPU accounting: reading a process's CPU, per-task deltas, and the floor
the messages and Decide calls set (the broker microbenchmark runs in tests/integration)."""

from __future__ import annotations

import math
import os

from services.bench.cost import cpu_ms_per_task, cpu_seconds, pipeline_floor


def test_cpu_seconds_reads_a_live_process_and_refuses_a_missing_one() -> None:
    sum(i * i for i in range(200_000))  # some CPU of our own to read
    assert cpu_seconds(os.getpid()) > 0.0
    assert cpu_seconds(2**22 + 12345) is None  # above the kernel's pid limit: never a process


def test_cpu_per_task_is_each_process_delta_over_the_tasks_with_a_total() -> None:
    before = {"aggregator": 1.0, "ingest": 2.0, "gone": 5.0}
    after = {"aggregator": 1.5, "ingest": 2.1, "new": 9.0}  # processes missing on either side: left out
    per_task = cpu_ms_per_task(before, after, tasks=100)
    assert per_task.keys() == {"aggregator", "ingest", "total"}
    assert math.isclose(per_task["aggregator"], 5.0) and math.isclose(per_task["ingest"], 1.0)
    assert math.isclose(per_task["total"], 6.0)


def test_the_floor_adds_messages_and_decide_calls_at_their_measured_cost() -> None:
    per_task = {"published": 10.0, "consumed": 12.0, "decisions": 2.0}
    broker = {"broker_publish_ms": 0.1, "client_publish_ms": 0.05, "broker_deliver_ms": 0.07}
    broker["client_consume_ms"] = 0.03
    floor = pipeline_floor(per_task, {"server": 1.0, "client": 0.5}, broker, cores=2)
    assert math.isclose(floor["messaging_ms"], 10 * 0.15 + 12 * 0.1)
    assert math.isclose(floor["decide_ms"], 3.0) and math.isclose(floor["total_ms"], 5.7)
    assert math.isclose(floor["max_tasks_per_s"], 2000 / 5.7)
