"""`python -m services.policy_server` as a process: serves once healthy, stops cleanly on SIGTERM, and
refuses bad settings with exit status 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.policy_server.client import PolicyClient
from tests.services.policy_server.conftest import settings, startable_snapshot
from tests.services.policy_server.test_client import free_port

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow  # each test starts a Python process that imports torch


def service_env(**variables: str) -> dict[str, str]:
    """The parent's environment (PATH, OMP_NUM_THREADS, ...) plus the service's EAT_* settings."""
    return {**os.environ, **variables}


def test_the_service_serves_then_stops_on_sigterm() -> None:
    port = free_port()
    env = service_env(**settings(grpc_port=port, log_format="json").to_env())
    process = subprocess.Popen(
        [sys.executable, "-m", "services.policy_server"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        with PolicyClient(f"127.0.0.1:{port}", timeout_s=2.0) as client:
            deadline = time.monotonic() + 60
            while not client.healthy():
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the service did not become healthy"
                time.sleep(0.1)
            assert client.decide(startable_snapshot()).policy_name == "reuse"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = process.stderr.read() if process.stderr else ""
    assert '"event": "serving"' in log and '"event": "stopped"' in log


def test_bad_settings_exit_with_status_2_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.policy_server"],
        cwd=REPO,
        env=service_env(EAT_NODES="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "EAT_NODES must be >= 1" in result.stderr
