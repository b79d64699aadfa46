"""`eat bench pipeline`'s throughput run on the real stack: every task accounted for, and the CPU each
process spent per task reported (the figures are measured, never asserted: see docs/services.md)."""

from __future__ import annotations

import math
from pathlib import Path

from services.bench.cost import broker_cost
from services.bench.pipeline import PipelineSettings, benchmark_submissions, run_throughput


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


def test_broker_cost_measures_a_round_trip_of_persistent_messages(amqp_url: str) -> None:
    cost = broker_cost(amqp_url, benchmark_submissions(300, "test"))
    assert cost.keys() == {"broker_publish_ms", "broker_deliver_ms", "client_publish_ms", "client_consume_ms"}
    assert cost["client_publish_ms"] > 0 and all(ms >= 0 for ms in cost.values())
