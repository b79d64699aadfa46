"""`eat bench pipeline`'s throughput run on the real stack: every task accounted for, and the CPU each
process spent per task reported (the figures are measured, never asserted: see docs/services.md)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from services.bench.pipeline import (
    PipelineSettings,
    broker_cost,
    cpu_ms_per_task,
    cpu_seconds,
    pipeline_floor,
    run_throughput,
)


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


def test_a_small_throughput_run_loses_nothing_and_reports_cpu_per_process(
    amqp_url: str, tmp_path: Path
) -> None:
    # Four executors: the benchmark's tasks ask for gangs of up to 4 (fewer would fail those).
    settings = PipelineSettings(amqp_url, tmp_path, tasks=24, warmup=4, executors=4, timeout_s=120.0)
    report = run_throughput(settings)
    assert report["lost"] == 0 and report["completed"] == 24 and report["tasks_per_s"] > 0
    cpu = report["cpu_ms_per_task"]
    services = {"ingest", "aggregator", "policy_server", "evaluator", "trainer"}
    assert services <= cpu.keys() and {f"executor:edge-{i}" for i in range(4)} <= cpu.keys()
    assert all(ms >= 0 for ms in cpu.values()) and cpu["aggregator"] > 0
    assert math.isclose(cpu["total"], sum(ms for name, ms in cpu.items() if name != "total"))
    # Every task took at least: accepted, a dispatch, a result (two queues), a quality, an event.
    per_task = report["per_task"]
    assert per_task["published"] >= 5 and per_task["consumed"] >= 6 and per_task["decisions"] >= 1
    assert all(code == 0 for code in report["exit_codes"].values()), str(report["exit_codes"])


def test_the_floor_adds_messages_and_decide_calls_at_their_measured_cost() -> None:
    per_task = {"published": 10.0, "consumed": 12.0, "decisions": 2.0}
    broker = {"broker_publish_ms": 0.1, "client_publish_ms": 0.05, "broker_deliver_ms": 0.07}
    broker["client_consume_ms"] = 0.03
    floor = pipeline_floor(per_task, {"server": 1.0, "client": 0.5}, broker, cores=2)
    assert math.isclose(floor["messaging_ms"], 10 * 0.15 + 12 * 0.1)
    assert math.isclose(floor["decide_ms"], 3.0) and math.isclose(floor["total_ms"], 5.7)
    assert math.isclose(floor["max_tasks_per_s"], 2000 / 5.7)


def test_broker_cost_measures_a_round_trip_of_persistent_messages(amqp_url: str) -> None:
    cost = broker_cost(amqp_url, messages=300)
    assert cost.keys() == {"broker_publish_ms", "broker_deliver_ms", "client_publish_ms", "client_consume_ms"}
    assert cost["client_publish_ms"] > 0 and all(ms >= 0 for ms in cost.values())
