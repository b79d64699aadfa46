"""The stack end to end against the real RabbitMQ: every accepted task ends in exactly one terminal
event, bad input is rejected and dead-lettered with its reason, and faults lose nothing."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pika
import pytest

from eat.v1 import common_pb2, tasks_pb2
from services.client import Client
from services.common import topology
from services.common.topology import DEAD_LETTER_QUEUE, REASON_HEADER, Queue
from services.common.vhost import drop_connections
from services.stack import Stack, StackConfig, StackError
from tests.support import wait_until

pytestmark = pytest.mark.slow
MODELS = ("sd-a", "sd-b")
AGGREGATOR_QUEUES = (
    topology.AGGREGATOR_TASKS,
    topology.AGGREGATOR_EXECUTORS,
    topology.AGGREGATOR_RESULTS,
    topology.AGGREGATOR_QUALITY,
)


def submission(i: int, prefix: str, patches: int | None = None, **kw: object) -> tasks_pb2.TaskSubmission:
    return tasks_pb2.TaskSubmission(
        task_id=f"{prefix}-{i:04d}",
        prompt=f"prompt number {i}",
        model=MODELS[i % len(MODELS)],
        patches=patches or (1, 2, 4)[i % 3],
        **kw,
    )


def run_tasks(client: Client, subs: list[tasks_pb2.TaskSubmission], timeout_s: float = 120.0) -> dict:
    for s in subs:
        client.submit(s)
    done = client.wait({s.task_id for s in subs}, timeout_s)
    list(client.events(1.0))  # give duplicates a chance to show up
    return done


def terminal_counts(client: Client) -> Counter:
    return Counter(e.task_id for e in client.history if e.terminal)


def dead_letters(amqp_url: str) -> list[tuple[bytes, dict]]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        out = []
        while True:
            method, props, body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=True)
            if method is None:
                return out
            out.append((body, dict(props.headers or {})))
    finally:
        connection.close()


def consumers(amqp_url: str, *queues: Queue) -> int:
    """How many consumers the broker counts on `queues` (it drops a dead process's at once)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        return sum(channel.queue_declare(q.name, passive=True).method.consumer_count for q in queues)
    finally:
        connection.close()


def test_200_tasks_end_to_end_each_with_exactly_one_terminal_event(make_stack, amqp_url: str) -> None:
    stack: Stack = make_stack(executors=4, time_scale=2000.0, models=MODELS)
    client = Client(amqp_url)
    subs = [submission(i, "e2e") for i in range(200)]
    done = run_tasks(client, subs)
    assert len(done) == 200
    assert Counter(e.kind for e in done.values()) == {"completed": 200}
    assert set(terminal_counts(client).values()) == {1}
    accepted = Counter(e.task_id for e in client.history if e.kind == "accepted")
    assert set(accepted.values()) == {1} and len(accepted) == 200
    for event in done.values():
        result = event.message.result
        assert 1 <= result.steps <= 32 and result.simulated and result.quality >= 0.0
    gang_sizes = Counter(len(e.message.result.gang) for e in done.values())
    assert gang_sizes == {1: 67, 2: 67, 4: 66}
    assert dead_letters(amqp_url) == []
    client.close()
    assert all(code == 0 for code in stack.stop().values())


def test_malformed_and_invalid_submissions_are_rejected_and_dead_lettered(make_stack, amqp_url: str) -> None:
    make_stack(executors=1, models=MODELS)
    client = Client(amqp_url)
    client.publish_raw(b"\xff\xfe not a protobuf", tasks_pb2.TaskSubmission.DESCRIPTOR.full_name)
    bad = submission(0, "bad", patches=16, qos=common_pb2.Qos(min_quality=3.0))
    bad.model = "no-such-model"
    client.submit(bad)
    rejected = [e for e in client.events(5.0) if e.kind == "rejected"]
    while len(rejected) < 2:
        more = [e for e in client.events(5.0) if e.kind == "rejected"]
        assert more, "expected two rejections"
        rejected += more
    by_id = {e.task_id: e.message for e in rejected}
    assert "cannot decode" in by_id[""].errors[0].reason
    fields = {error.field for error in by_id["bad-0000"].errors}
    assert fields == {"patches", "model", "qos.min_quality"}
    letters = dead_letters(amqp_url)
    reasons = sorted(headers[REASON_HEADER] for _, headers in letters)
    assert len(letters) == 2
    assert any("cannot decode" in r for r in reasons)
    assert any("patches: must be in [1, 8], got 16" in r for r in reasons)
    client.close()


def test_policy_server_outage_falls_back_and_recovers(make_stack, amqp_url: str) -> None:
    stack: Stack = make_stack(executors=4, time_scale=1000.0, models=MODELS)
    client = Client(amqp_url)
    first = run_tasks(client, [submission(i, "before") for i in range(20)])
    stack.kill("policy_server")
    during = run_tasks(client, [submission(i, "during") for i in range(20)])
    stack.start_service("policy_server")
    stack.wait_ready(60, ["policy_server"])
    # The aggregator's channel reconnects on its own backoff (at most 1 s): keep work coming until it
    # decides remotely again.
    deadline, probe = time.monotonic() + 30, 0
    while "policy server is back" not in stack.log_path("aggregator").read_text():
        assert time.monotonic() < deadline, "the aggregator never went back to the policy server"
        assert len(run_tasks(client, [submission(probe, "probe")])) == 1
        probe += 1
    after = run_tasks(client, [submission(i, "after") for i in range(20)])
    for batch in (first, during, after):
        failed = {tid: str(e.message) for tid, e in batch.items() if e.kind != "completed"}
        assert len(batch) == 20 and not failed, failed
    log = stack.log_path("aggregator").read_text()
    assert "deciding with the fallback" in log and "policy server is back" in log
    assert set(terminal_counts(client).values()) == {1}
    client.close()


def test_an_executor_killed_mid_task_has_its_task_retried_elsewhere(make_stack, amqp_url: str) -> None:
    # At 20x a task takes at least 24 s / 20 = 1.2 s of wall time: long enough to kill its executor.
    fast_detection = {"aggregator": {"EAT_HEARTBEAT_TIMEOUT_S": "1.5"}}
    stack: Stack = make_stack(executors=4, time_scale=20.0, models=MODELS, extra_env=fast_detection)
    client = Client(amqp_url)
    subs = [submission(i, "kill", patches=1) for i in range(4)]
    for s in subs:
        client.submit(s)
    wait_until(lambda: "attempt started" in stack.log_path("executor:edge-0").read_text(), 10, "edge-0 busy")
    stack.kill("executor:edge-0", signal.SIGKILL)
    done = client.wait({s.task_id for s in subs}, 60)
    assert {e.kind for e in done.values()} == {"completed"} and len(done) == 4
    retried = [e.message for e in done.values() if e.message.attempts > 1]
    assert len(retried) == 1 and "edge-0" not in retried[0].result.gang
    assert set(terminal_counts(client).values()) == {1}
    client.close()


def test_services_reconnect_after_the_broker_drops_every_connection(
    make_stack, amqp_url: str, vhost: str
) -> None:
    stack: Stack = make_stack(executors=4, time_scale=1000.0, models=MODELS)
    client = Client(amqp_url)
    assert len(run_tasks(client, [submission(i, "pre") for i in range(10)])) == 10
    client.close()
    drop_connections(vhost)
    on_the_bus = [name for name in stack.processes if name != "policy_server"]
    wait_until(
        lambda: all("reconnected" in stack.log_path(name).read_text() for name in on_the_bus),
        30,
        "every service to notice and reconnect",
    )
    client = Client(amqp_url)
    done = run_tasks(client, [submission(i, "post") for i in range(30)])
    assert len(done) == 30 and {e.kind for e in done.values()} == {"completed"}
    for name in ("ingest", "aggregator", "evaluator", "executor:edge-0"):
        assert "reconnected" in stack.log_path(name).read_text(), name
    assert all(p.poll() is None for p in stack.processes.values())
    client.close()


def test_an_aggregator_crash_loses_nothing(make_stack, amqp_url: str) -> None:
    """SIGKILL the aggregator with tasks queued and running; its journal and the durable queues carry
    every task across the restart. A crash between publishing an event and journaling it may repeat
    that event (at-least-once), so this checks that no task is lost and none ends two ways."""
    stack: Stack = make_stack(executors=4, time_scale=200.0, models=MODELS, with_trainer=False)
    client = Client(amqp_url)
    subs = [submission(i, "crash") for i in range(40)]
    client.submit_many(subs)
    wait_until(lambda: "dispatch" in stack.log_path("aggregator").read_text(), 10, "first dispatches")
    stack.kill("aggregator", signal.SIGKILL)
    wait_until(lambda: consumers(amqp_url, *AGGREGATOR_QUEUES) == 0, 30, "the broker to drop the aggregator")
    stack.start_service("aggregator")
    stack.wait_ready(60, ["aggregator"])
    done = client.wait({s.task_id for s in subs}, 120)
    assert len(done) == 40 and {e.kind for e in done.values()} == {"completed"}
    kinds_per_task: dict[str, set[str]] = {}
    for event in client.history:
        if event.terminal:
            kinds_per_task.setdefault(event.task_id, set()).add(event.kind)
    assert all(kinds == {"completed"} for kinds in kinds_per_task.values())
    client.close()


def test_a_stack_that_does_not_come_up_leaves_no_process_behind(amqp_url: str, tmp_path: Path) -> None:
    """Readiness cannot be reached in 10 ms (the services take seconds to start): start raises, and
    every service it launched has been stopped."""
    stack = Stack(StackConfig(amqp_url=amqp_url, work_dir=tmp_path / "stack", executors=1))
    with pytest.raises(StackError, match="not ready"):
        stack.start(timeout_s=0.01)
    assert stack.processes and all(process.poll() is not None for process in stack.processes.values())


def test_service_ports_are_distinct_and_outside_the_ephemeral_and_rendezvous_ranges() -> None:
    from services.aggregator.settings import AggregatorSettings
    from services.stack import SERVICE_PORTS, free_port

    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(port in SERVICE_PORTS for port in ports)
    assert max(ports) < AggregatorSettings().rendezvous_port_base  # gangs' TCP stores start there
