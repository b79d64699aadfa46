"""deploy/healthcheck.py run as the container runs it, against a real /metrics server and a real gRPC
health service: exit 0 only when healthy."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"
POLICY_SERVICE = "eat.v1.PolicyService"


def run_healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False
    )


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def metrics_port() -> Iterator[int]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def health_servicer() -> Iterator[tuple[health.HealthServicer, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def test_http_check_passes_when_metrics_answer(metrics_port: int) -> None:
    result = run_healthcheck("http", f"http://127.0.0.1:{metrics_port}/metrics")
    assert result.returncode == 0, result.stderr


def test_http_check_fails_when_nothing_listens() -> None:
    result = run_healthcheck("http", f"http://127.0.0.1:{unused_port()}/metrics")
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_grpc_check_passes_only_while_serving(health_servicer: tuple[health.HealthServicer, int]) -> None:
    servicer, port = health_servicer
    servicer.set(POLICY_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert run_healthcheck("grpc", f"127.0.0.1:{port}", POLICY_SERVICE).returncode == 0

    servicer.set(POLICY_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    result = run_healthcheck("grpc", f"127.0.0.1:{port}", POLICY_SERVICE)
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stderr


def test_grpc_check_fails_for_a_service_the_server_does_not_know(
    health_servicer: tuple[health.HealthServicer, int],
) -> None:
    _, port = health_servicer
    result = run_healthcheck("grpc", f"127.0.0.1:{port}", POLICY_SERVICE)
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr


def test_grpc_check_fails_when_nothing_listens() -> None:
    result = run_healthcheck("grpc", f"127.0.0.1:{unused_port()}", POLICY_SERVICE)
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr
