"""The stack's command line against a running stack: submit, status, trace make and replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main
from services.stack import Stack

pytestmark = pytest.mark.slow


def test_submit_status_and_trace_replay(make_stack, amqp_url: str, tmp_path: Path, capsys) -> None:
    stack: Stack = make_stack(executors=4, time_scale=1000.0, with_trainer=False)
    assert main(["submit", "a red fox", "--patches", "2", "--amqp-url", amqp_url, "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert "completed:" in out and "quality:" in out
    assert main(["status", "--amqp-url", amqp_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert sorted(s["server_id"] for s in status["servers"]) == stack.config.executor_ids
    assert status["tasks"]["completed"] == 1
    trace = tmp_path / "trace.jsonl"
    assert main(["trace", "make", str(trace), "--nodes", "4", "--rate", "0.05", "--seed", "7"]) == 0
    assert len(trace.read_text().splitlines()) == 32
    summary_path = tmp_path / "replay.json"
    argv = ["trace", "replay", str(trace), "--amqp-url", amqp_url, "--time-scale", "1000"]
    assert main([*argv, "--json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["completed"] == 32 and summary["lost"] == 0
    assert main(["submit", "x", "--model", "nope", "--amqp-url", amqp_url, "--timeout", "10"]) == 1
    assert "rejected" in capsys.readouterr().out


def test_submit_says_how_to_start_a_missing_broker(capsys) -> None:
    assert main(["submit", "x", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F"]) == 2
    assert "rabbitmq-server -detached" in capsys.readouterr().err
