"""The aggregator's client against real servers: replies as domain values, fast failure when the
server is down or mute, and recovery once it is back."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import pytest

from policy_models.obs import OBS_SPEC_VERSION
from services.policy_server.client import PolicyClient, PolicyUnavailable
from services.policy_server.server import RunningServer
from tests.services.policy_server.conftest import all_busy_snapshot, startable_snapshot

StartServer = Callable[..., RunningServer]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mute_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_replies_come_back_as_domain_values(start_server: StartServer) -> None:
    server = start_server(policy="fifo")
    with PolicyClient(server.target, timeout_s=5.0) as client:
        snapshot = startable_snapshot()
        reply = client.decide(snapshot, request_id="agg-1")
        assert (
            reply.decision.execute and reply.decision.task_id == snapshot.queue[reply.decision.slot].task_id
        )
        assert (reply.version, reply.policy_name) == (0, "fifo") and reply.server_latency_us > 0
        waiting = client.decide(all_busy_snapshot())
        assert not waiting.decision.execute and waiting.decision.slot == -1
        version = client.version()
        assert (version.version, version.policy_name, version.obs_spec_version) == (
            0,
            "fifo",
            OBS_SPEC_VERSION,
        )
        assert abs(version.loaded_at - time.time()) < 60
        assert client.healthy()


def test_an_error_reply_is_unavailable_with_its_status(start_server: StartServer) -> None:
    server = start_server()
    snapshot = startable_snapshot()
    no_servers = type(snapshot)(snapshot.now_s, (), snapshot.queue, snapshot.total_queued)
    with PolicyClient(server.target, timeout_s=5.0) as client, pytest.raises(PolicyUnavailable) as caught:
        client.decide(no_servers)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "no servers" in str(caught.value)


def assert_fails_fast(call: Callable[[], object], within_s: float) -> PolicyUnavailable:
    started = time.monotonic()
    with pytest.raises(PolicyUnavailable) as caught:
        call()
    assert time.monotonic() - started < within_s
    return caught.value


def test_nothing_listening_fails_fast_and_the_client_recovers_when_the_server_starts(
    start_server: StartServer,
) -> None:
    port = free_port()
    with PolicyClient(f"127.0.0.1:{port}", timeout_s=0.5) as client:
        snapshot = startable_snapshot()
        for _ in range(3):  # also after the channel has entered its reconnect backoff
            error = assert_fails_fast(lambda: client.decide(snapshot), within_s=1.0)
            assert error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert_fails_fast(client.version, within_s=1.0)
        assert not client.healthy()

        server = start_server(grpc_port=port)
        reply = eventually(lambda: client.decide(snapshot), within_s=5.0)
        assert reply.decision.execute and client.healthy()

        server.stop()
        assert_fails_fast(lambda: client.decide(snapshot), within_s=1.0)
        start_server(grpc_port=port)
        assert eventually(lambda: client.decide(snapshot), within_s=5.0).decision.execute


def test_a_server_that_never_answers_costs_one_timeout(mute_listener: int) -> None:
    with PolicyClient(f"127.0.0.1:{mute_listener}", timeout_s=0.3) as client:
        error = assert_fails_fast(lambda: client.decide(startable_snapshot()), within_s=1.0)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not client.healthy()


def eventually(call: Callable[[], T], within_s: float) -> T:
    """The first successful result of `call`, retried while it raises PolicyUnavailable."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except PolicyUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
