"""Integration tests run the real stack (RabbitMQ, gRPC, service processes) in a virtual host of
their own per test, so leftovers of one test (durable queues, unacked messages) never reach another."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common import vhost as vhosts
from services.stack import Stack, StackConfig
from services.stack_cli import broker_reachable


@pytest.fixture
def vhost() -> Iterator[str]:
    if not broker_reachable(vhosts.LOCAL_BROKER):
        pytest.fail("RabbitMQ is not running on 127.0.0.1:5672: run scripts/ensure_rabbitmq.sh")
    if not vhosts.can_manage():
        pytest.fail("rabbitmqctl is needed to give each integration test its own virtual host")
    name = f"eat-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    vhosts.create(name)
    yield name
    vhosts.delete(name)


@pytest.fixture
def amqp_url(vhost: str) -> str:
    return vhosts.LOCAL_BROKER + vhost


@pytest.fixture
def make_stack(amqp_url: str, tmp_path: Path) -> Iterator:
    stacks: list[Stack] = []

    def make(**overrides: object) -> Stack:
        config = StackConfig(amqp_url=amqp_url, work_dir=tmp_path / f"stack{len(stacks)}", **overrides)
        stack = Stack(config)
        stacks.append(stack)
        stack.start()
        return stack

    yield make
    for stack in stacks:
        stack.stop()
