"""Hot swap through the real RabbitMQ: a PolicyUpdated on eat.learning replaces the serving policy; a
refused one is dead-lettered with its reason and changes nothing.

eat.policy.updates is shared by every policy server on the broker: the test purges it first and must
not run alongside another test that consumes it. Dead letters are watched through a private queue
bound to the dead-letter exchange (a fanout), so other tests' dead letters are left where they are.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from eat.v1 import learning_pb2
from policy_models.live import Decision, LiveScheduler, ModelCatalog
from policy_models.obs import OBS_SPEC_VERSION
from policy_models.policies import make_policy
from services.common import topology
from services.common.bus import Bus, Delivery
from services.common.settings import ServiceSettings
from services.policy_server.client import PolicyClient, PolicyReply, PolicyVersionInfo
from services.policy_server.core import scheduler_config
from services.policy_server.server import RunningServer
from tests.services.policy_server.conftest import MODELS, settings, startable_snapshot

AMQP_URL = ServiceSettings().amqp_url
StartServer = Callable[..., RunningServer]


class Broker:
    """The test's own connection: publishes updates and reads a private copy of every dead letter."""

    def __init__(self) -> None:
        self.bus = Bus(AMQP_URL, queues=(topology.POLICY_UPDATES, topology.DEAD_LETTERS))
        self.bus.connect()
        channel = self.bus._channel
        channel.queue_purge(topology.POLICY_UPDATES.name)  # stale updates from earlier runs
        declared = channel.queue_declare(
            f"test.policy-server.dead-letters-{uuid.uuid4().hex[:12]}",
            exclusive=True,
            arguments={"x-expires": 120_000},
        )
        self.dead_letters = declared.method.queue
        channel.queue_bind(self.dead_letters, topology.DLX.name)

    def publish_update(self, update: learning_pb2.PolicyUpdated, correlation_id: str) -> None:
        self.bus.publish(
            topology.LEARNING.name, topology.POLICY_UPDATED_KEY, update, correlation_id=correlation_id
        )

    def dead_letter(self, correlation_id: str, timeout_s: float) -> Delivery:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for delivery in self.bus.drain(self.dead_letters, timeout_s=0.1):
                if delivery.correlation_id == correlation_id:
                    return delivery
        pytest.fail(f"no dead letter with correlation id {correlation_id} within {timeout_s} s")

    def close(self) -> None:
        self.bus.close()  # the exclusive queue goes with the connection


@pytest.fixture
def broker() -> Iterator[Broker]:
    try:
        connection = Broker()
    except pika.exceptions.AMQPConnectionError as err:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} (make test starts it): {err!r}")
    yield connection
    connection.close()


class DecideLoop:
    """Decide calls back to back in a thread of their own, replies kept in order (a busy aggregator)."""

    def __init__(self, target: str) -> None:
        self.client = PolicyClient(target, timeout_s=5.0)
        self.replies: list[PolicyReply] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.replies.append(self.client.decide(startable_snapshot()))

    def wait_for(self, done: Callable[[list[PolicyReply]], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.replies and done(self.replies)):
            assert self._thread.is_alive(), "the decide loop died"
            assert time.monotonic() < deadline, f"decide loop: condition not met in {timeout_s} s"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> DecideLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.client.close()


def decision_of(policy: str) -> Decision:
    """The decision a fresh scheduler for `policy` takes on the loop's snapshot."""
    cfg = scheduler_config(settings())
    scheduler = LiveScheduler(make_policy(policy, cfg), cfg, ModelCatalog(MODELS), seed=0)
    return scheduler.decide(startable_snapshot())


def wait_for_version(client: PolicyClient, version: int, timeout_s: float = 10.0) -> PolicyVersionInfo:
    deadline = time.monotonic() + timeout_s
    while (info := client.version()).version != version:
        assert time.monotonic() < deadline, f"still serving v{info.version}, expected v{version}"
        time.sleep(0.05)
    return info


def test_a_promoted_checkpoint_is_swapped_in_and_a_mismatched_one_is_dead_lettered(
    broker: Broker, start_server: StartServer, tiny_checkpoint: Path
) -> None:
    server = start_server(policy="reuse", hot_swap=True)
    with PolicyClient(server.target, timeout_s=5.0) as client, DecideLoop(server.target) as during_swap:
        during_swap.wait_for(lambda replies: replies[-1].version == 0)
        promoted = learning_pb2.PolicyUpdated(
            version=5,
            checkpoint_uri=tiny_checkpoint.as_uri(),
            algorithm="eat",
            obs_spec_version=OBS_SPEC_VERSION,
        )
        broker.publish_update(promoted, correlation_id="promote-5")
        info = wait_for_version(client, 5)
        assert (info.policy_name, info.algorithm) == ("eat", "eat")
        assert info.checkpoint_uri == tiny_checkpoint.as_uri()
        during_swap.wait_for(lambda replies: replies[-1].version == 5)
        during_swap.stop()
        assert_whole_policies(during_swap.replies, tiny_checkpoint)

        mismatched = learning_pb2.PolicyUpdated(
            version=6,
            checkpoint_uri=str(tiny_checkpoint),
            algorithm="eat",
            obs_spec_version=OBS_SPEC_VERSION + 1,
        )
        correlation_id = f"mismatch-{uuid.uuid4().hex[:8]}"
        broker.publish_update(mismatched, correlation_id=correlation_id)
        dead = broker.dead_letter(correlation_id, timeout_s=10.0)
        assert dead.headers[topology.SOURCE_HEADER] == topology.POLICY_UPDATES.name
        assert f"observation spec v{OBS_SPEC_VERSION + 1}" in dead.headers[topology.REASON_HEADER]
        assert dead.parse(learning_pb2.PolicyUpdated) == mismatched
        assert client.version().version == 5 and client.decide(startable_snapshot()).version == 5


def assert_whole_policies(replies: list[PolicyReply], checkpoint: Path) -> None:
    """Every reply is wholly the old policy's or wholly the new one's: version, name and action."""
    expected = {0: ("reuse", decision_of("reuse")), 5: ("eat", decision_of(f"checkpoint:{checkpoint}"))}
    versions = [reply.version for reply in replies]
    assert set(versions) == {0, 5} and versions == sorted(versions), "versions must only move forward"
    for reply in replies:
        name, decision = expected[reply.version]
        assert reply.policy_name == name
        assert reply.decision.action == pytest.approx(decision.action, abs=1e-6)
