"""`python -m services.trainer` as a process: it consumes Experience, and on SIGTERM saves its state and
exits 0; bad settings exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from services.common import topology
from services.trainer.__main__ import trainer_config
from services.trainer.core import OnlineTrainer
from services.trainer.settings import TrainerSettings
from tests.services.rabbit import observer, purge_experience_queue, unique
from tests.services.trainer.builders import MODELS, experience, random_transition

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stored_transitions(port: int) -> float:
    """eat_trainer_transitions_total{outcome="stored"} from the process's /metrics (0 until it is up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith('eat_trainer_transitions_total{outcome="stored"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def trainer_env(tmp_path: Path, port: int) -> dict[str, str]:
    settings = TrainerSettings.from_env(
        {},
        state_dir=tmp_path / "state",
        policy_dir=tmp_path / "policies",
        metrics_port=port,
        models=MODELS,  # the models of the synthetic snapshots
        buffer_capacity=1000,
        warmup_transitions=1000,  # no updates: this test is about the process, not learning
        save_every_s=3600.0,
        log_format="json",
        nice=5,
    )
    return {**os.environ, **settings.to_env(), "OMP_NUM_THREADS": "1"}


@pytest.mark.broker
def test_the_process_stores_experience_and_saves_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = trainer_env(tmp_path, port)
    episode = unique("test-main")
    rng = np.random.default_rng(5)
    purge_experience_queue()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.trainer"], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        with observer() as obs:
            for step in range(3):
                message = experience(random_transition(rng, episode, step))
                obs.bus.publish(topology.LEARNING.name, topology.EXPERIENCE_KEY, message)
        deadline = time.monotonic() + 60.0
        while stored_transitions(port) < 3:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the trainer did not store the transitions in time"
            time.sleep(0.2)
        # Background work: the process lowered its own priority by EAT_NICE.
        expected = min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)  # nice values stop at 19
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == expected
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert '"event": "saved state"' in stderr and '"event": "stopped"' in stderr

    settings = TrainerSettings.from_env({key: value for key, value in env.items() if key.startswith("EAT_")})
    resumed = OnlineTrainer.start(trainer_config(settings), settings.state_dir)
    assert all((episode, step) in resumed.recent for step in range(3))
    assert resumed.counters.updates == 0


@pytest.mark.slow
@pytest.mark.parametrize("variable", ["EAT_ALGORITHM", "EAT_EVAL_SEEDS"])
def test_bad_settings_exit_2(variable: str) -> None:
    env = {**os.environ, variable: "nonsense", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "services.trainer"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and variable in done.stderr
