"""/metrics listens on 127.0.0.1 unless a deployment sets EAT_METRICS_HOST."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from services.common import metrics
from services.common.settings import ServiceSettings


def test_the_default_host_is_loopback() -> None:
    assert ServiceSettings.from_env({}).metrics_host == "127.0.0.1"
    assert ServiceSettings.from_env({"EAT_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


@pytest.mark.parametrize(("env", "host"), [({}, "127.0.0.1"), ({"EAT_METRICS_HOST": "0.0.0.0"}, "0.0.0.0")])
def test_start_service_binds_metrics_to_the_configured_host(
    env: dict[str, str], host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common.runner import start_service

    bound: list[tuple[int, str]] = []
    monkeypatch.setattr(metrics, "start_http_server", lambda port, addr: bound.append((port, addr)))
    start_service("test", ServiceSettings.from_env({**env, "EAT_METRICS_PORT": "9999"}))
    assert bound == [(9999, host)]


def test_metrics_served_on_loopback_answer_there() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.start_metrics(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200 and b"eat_bus_consumed_total" in response.read()
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0 (00000000)


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses (as /proc/net/tcp writes them) listening on `port`."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    fields = [line.split() for line in lines]
    listen = "0A"
    return {f[1].split(":")[0] for f in fields if f[3] == listen and int(f[1].split(":")[1], 16) == port}
