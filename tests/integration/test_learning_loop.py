"""The learning loop through the real stack: a policy update mid-run is picked up by the policy
server and used for the next decisions; the trainer learns from live experience and promotes a policy
that the policy server then serves."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest

from eat.v1 import learning_pb2
from policy_models.obs import OBS_SPEC_VERSION
from services.client import Client
from services.common.bus import Bus
from services.common.topology import EXPERIENCE_KEY, LEARNING, POLICY_UPDATED_KEY
from services.stack import Stack
from tests.integration.test_pipeline import MODELS, run_tasks, submission, wait_until
from tests.services.policy_server.conftest import save_tiny_checkpoint

pytestmark = pytest.mark.slow


def serving_version(stack: Stack) -> int:
    client = stack.policy_client(timeout_s=2.0)
    try:
        return client.version().version
    finally:
        client.close()


def tap(amqp_url: str, routing_key: str) -> tuple[pika.BlockingConnection, str]:
    """A private queue that copies what eat.learning routes with `routing_key`."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, LEARNING.name, routing_key=routing_key)
    return connection, queue


def drain(connection: pika.BlockingConnection, queue: str) -> list[bytes]:
    channel = connection.channel()
    bodies = []
    while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
        bodies.append(got[2])
    return bodies


def test_a_policy_update_mid_run_is_picked_up(make_stack, amqp_url: str, tmp_path: Path) -> None:
    stack: Stack = make_stack(executors=4, time_scale=1000.0, models=MODELS, with_trainer=False)
    experience, queue = tap(amqp_url, EXPERIENCE_KEY)
    client = Client(amqp_url)
    assert len(run_tasks(client, [submission(i, "v0") for i in range(20)])) == 20
    assert serving_version(stack) == 0
    update = learning_pb2.PolicyUpdated(
        version=7,
        checkpoint_uri=str(save_tiny_checkpoint(tmp_path / "ckpt")),
        algorithm="eat",
        obs_spec_version=OBS_SPEC_VERSION,
    )
    publisher = Bus(amqp_url, queues=())
    publisher.publish(LEARNING.name, POLICY_UPDATED_KEY, update)
    publisher.close()
    wait_until(lambda: serving_version(stack) == 7, 30, "the policy server to serve version 7")
    drain(experience, queue)
    # The untrained policy mostly waits; the aggregator's starvation guard still starts every task.
    done = run_tasks(client, [submission(i, "v7") for i in range(20)])
    assert len(done) == 20 and {e.kind for e in done.values()} == {"completed"}
    versions = {learning_pb2.Experience.FromString(b).policy_version for b in drain(experience, queue)}
    assert 7 in versions
    client.close()
    experience.close()


def test_the_trainer_learns_from_live_experience_and_its_policy_is_served(make_stack, amqp_url: str) -> None:
    quick_promotion = {
        "EAT_WARMUP_TRANSITIONS": "16",
        "EAT_BATCH_SIZE": "16",
        "EAT_EVALUATE_EVERY_UPDATES": "10",
        "EAT_EVAL_SEEDS": "1",
        "EAT_MIN_IMPROVEMENT": "-1000",  # promote the first candidate: this checks the plumbing
    }
    stack: Stack = make_stack(
        executors=4, time_scale=1000.0, models=MODELS, extra_env={"trainer": quick_promotion}
    )
    updates, queue = tap(amqp_url, POLICY_UPDATED_KEY)
    client = Client(amqp_url)
    deadline = time.monotonic() + 120
    batch = 0
    while serving_version(stack) < 1:
        assert time.monotonic() < deadline, "no promotion reached the policy server"
        done = run_tasks(client, [submission(i, f"b{batch}") for i in range(20)])
        assert {e.kind for e in done.values()} == {"completed"}
        batch += 1
    (body, *_) = drain(updates, queue)
    promoted = learning_pb2.PolicyUpdated.FromString(body)
    assert promoted.version == 1 and Path(promoted.checkpoint_uri).is_dir()
    assert promoted.evaluation.episodes == 1
    # The new policy decides the next tasks (the starvation guard covers an untrained one's waits).
    done = run_tasks(client, [submission(i, "after") for i in range(20)])
    assert {e.kind for e in done.values()} == {"completed"}
    client.close()
    updates.close()
