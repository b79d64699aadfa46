"""Test tiers (markers registered in pyproject.toml): `broker` tests need RabbitMQ, `slow` ones take
more than a few seconds. `make test-fast` runs neither; `make test` runs everything.

A test that uses a broker fixture (a private vhost, its AMQP URL, a stack) is marked `broker` here at
collection. Tests that reach the broker through tests/services/rabbit.py's helpers are marked in their
modules, and a test that connects to the broker without the mark errors at teardown, so a missing mark
shows up in every run rather than only where no broker is running."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from services.common.settings import ServiceSettings
from services.common.vhost import LOCAL_BROKER

BROKER_FIXTURES = frozenset({"vhost", "amqp_url", "make_stack", "broker"})
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


def _broker_addresses() -> set[tuple[str, int]]:
    addresses = set()
    for url in {LOCAL_BROKER, ServiceSettings().amqp_url}:
        parsed = urlparse(url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 5672
        addresses |= {(h, port) for h in LOOPBACK} if host in LOOPBACK else {(host, port)}
    return addresses


BROKER_ADDRESSES = _broker_addresses()


@pytest.fixture(autouse=True)
def unmarked_tests_stay_off_the_broker(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Record connections to the broker made by a test not marked `broker` (from its own thread or the
    threads it starts: threads left over from earlier tests are not its doing) and fail it if any."""
    if request.node.get_closest_marker("broker") is not None:
        yield
        return
    earlier = {thread.ident for thread in threading.enumerate()} - {threading.get_ident()}
    touched: list[object] = []

    def watched(original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(sock: socket.socket, address: Any, *args: Any) -> Any:
            to_broker = isinstance(address, tuple) and tuple(address[:2]) in BROKER_ADDRESSES
            if to_broker and threading.get_ident() not in earlier:
                touched.append(address[:2])
            return original(sock, address, *args)

        return connect

    monkeypatch.setattr(socket.socket, "connect", watched(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", watched(socket.socket.connect_ex))
    yield
    if touched:
        pytest.fail(f"connected to the broker at {touched[0]} but is not marked broker (@pytest.mark.broker)")
