"""Throwaway RabbitMQ virtual hosts (rabbitmqctl), so tests and benchmarks run on a clean broker
namespace of their own: no leftover durable queues or messages from other runs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, timeout=60)


def can_manage() -> bool:
    return shutil.which("rabbitmqctl") is not None


def create(name: str) -> str:
    """A fresh vhost `name` (deleted first if it exists) that guest may use; returns its AMQP URL."""
    subprocess.run(["rabbitmqctl", "--quiet", "delete_vhost", name], capture_output=True, timeout=60)
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return LOCAL_BROKER + name


def delete(name: str) -> None:
    _ctl("delete_vhost", name)


def drop_connections(name: str) -> None:
    """Close every client connection of vhost `name` at the broker (clients must reconnect)."""
    _ctl("close_all_connections", "-p", name, "dropping connections on purpose")


@contextmanager
def temporary(name: str) -> Iterator[str]:
    """A fresh vhost for the duration of a `with` block; yields its AMQP URL."""
    url = create(name)
    try:
        yield url
    finally:
        delete(name)
