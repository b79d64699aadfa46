"""What the pipeline costs in CPU (`eat bench pipeline`): per process from Linux /proc (the broker's
Erlang VM included when readable), messages and decisions per task from the services' /metrics, the
broker's cost per persistent message at its best (batched), and the floor these set on tasks/s."""

from __future__ import annotations

import contextlib
import math
import os
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import pika
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families

from services.common.bus import Bus
from services.common.topology import Queue
from services.stack import Stack


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used (Linux /proc); None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def broker_pids() -> list[int]:
    """The local RabbitMQ's Erlang VM (beam.smp), when it runs on this machine and is readable."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp":
                    pids.append(int(entry.name))
    return pids


def cpu_by_process(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each stack service and of the broker (where readable)."""
    pids = {name: process.pid for name, process in stack.processes.items()}
    pids |= {f"rabbitmq-{pid}" if i else "rabbitmq": pid for i, pid in enumerate(broker_pids())}
    used = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return {name: seconds for name, seconds in used.items() if seconds is not None}


def cpu_ms_per_task(before: dict[str, float], after: dict[str, float], tasks: int) -> dict[str, float]:
    """Each process's CPU milliseconds per task over the measured batch, and their total."""
    per_task = {name: 1e3 * (after[name] - before[name]) / tasks for name in after if name in before}
    return per_task | {"total": sum(per_task.values())}


# Counters summed over the stack's /metrics endpoints (family names as the parser gives them).
STACK_COUNTERS = {
    "published": "eat_bus_published",  # messages the services published (confirmed)
    "consumed": "eat_bus_consumed",  # messages the services handled and acked
    "decisions": "eat_aggregator_decisions",  # Decide calls (and fallback decisions)
}


def scrape_counters(stack: Stack) -> dict[str, float]:
    """STACK_COUNTERS' totals over every service of the stack (a service that does not answer adds 0)."""
    totals = dict.fromkeys(STACK_COUNTERS, 0.0)
    for port in stack.metrics_ports.values():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5.0) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for key, name in STACK_COUNTERS.items():
                if family.name == name:
                    totals[key] += sum(s.value for s in family.samples if s.name == f"{name}_total")
    return totals


def broker_cost(amqp_url: str, body: Sequence[Message]) -> dict[str, float]:
    """CPU milliseconds per persistent message (`body`, sent through a queue of its own), on the
    broker and on the client, with the bus's own batched publisher confirms and multiple acks: a
    floor for any hop of the pipeline."""
    messages = len(body)
    queue = Queue(f"eat.bench.floor-{uuid.uuid4().hex[:8]}", dead_letter=False)
    bus = Bus(amqp_url, queues=(queue,))
    bus.connect()
    broker = broker_pids()
    consumer = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        broker_0, client_0 = _broker_cpu(broker), time.process_time()
        bus.publish_many(("", queue.name, m) for m in body)
        broker_1, client_1 = _broker_cpu(broker), time.process_time()
        channel = consumer.channel()
        channel.basic_qos(prefetch_count=256)  # the bus's prefetch, and acks many at a time like it
        stream = channel.consume(queue.name, inactivity_timeout=5.0)
        for got, (method, _, _) in enumerate(stream, start=1):
            if method is None:
                break
            if got % 64 == 0 or got == messages:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if got == messages:
                break
        broker_2, client_2 = _broker_cpu(broker), time.process_time()
        channel.cancel()
        channel.queue_delete(queue.name)
    finally:
        consumer.close()
        bus.close()
    per = 1e3 / messages
    return {
        "broker_publish_ms": (broker_1 - broker_0) * per,
        "broker_deliver_ms": (broker_2 - broker_1) * per,
        "client_publish_ms": (client_1 - client_0) * per,
        "client_consume_ms": (client_2 - client_1) * per,
    }


def _broker_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def pipeline_floor(
    per_task: dict[str, float], decide_cpu: dict[str, float], broker: dict[str, float], cores: int
) -> dict[str, float]:
    """The CPU a task needs for its messages and Decide calls alone (every service's own work left
    out), from the run's counts per task and the microbenchmarks' cost per message and per call; and
    the tasks/s those alone would allow on `cores` cores."""
    publish = broker["broker_publish_ms"] + broker["client_publish_ms"]
    deliver = broker["broker_deliver_ms"] + broker["client_consume_ms"]
    messaging = per_task["published"] * publish + per_task["consumed"] * deliver
    deciding = per_task["decisions"] * (decide_cpu["server"] + decide_cpu["client"])
    total = messaging + deciding
    return {
        "messaging_ms": messaging,
        "decide_ms": deciding,
        "total_ms": total,
        "cores": cores,
        "max_tasks_per_s": cores * 1e3 / total if total > 0 else math.inf,
    }
