"""The whole stack as local processes: `eat up`, the demo, the pipeline benchmark and the integration
tests start it here.

Each service runs as `python -m services.<name>` with its settings in EAT_* variables and its log in
`<log_dir>/<name>.log`. Start-up waits until every service is serving: the policy server answers
gRPC health checks and every bus service consumes its queue. Stopping sends SIGTERM (services finish
the message at hand; unacked deliveries go back to the broker) and kills what has not exited after a
grace period.

The policy server serves TLS with a bearer token: development certificates are made in
`<work_dir>/certs` when missing, and the server and its callers (the aggregator, and this process
through `policy_client`) are pointed at them.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pika.exceptions

from services.aggregator.settings import AggregatorSettings
from services.common import topology
from services.common.certs import DevCerts, ensure_dev_certs
from services.policy_server.client import PolicyClient, PolicyClientSettings


class StackError(RuntimeError):
    """The stack could not start (a service exited or did not become ready in time)."""


# Ports handed to services come from below the kernel's ephemeral range (32768+ by default): a port
# the kernel picked for bind(0) and that was released could be handed again to any outbound connection
# (the services open many to RabbitMQ) before the service binds it. They also stay below the ports the
# aggregator gives gangs for their rendezvous (29500+), where a service would block a gang's TCP store.
SERVICE_PORTS = range(20000, AggregatorSettings.rendezvous_port_base)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, outside the ephemeral range, not handed out before by this process."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.choice(SERVICE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise StackError(f"no free port in {SERVICE_PORTS}")


@dataclass
class StackConfig:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    executors: int = 4
    time_scale: float = 100.0  # sim executors: simulated seconds per wall second
    policy: str = "reuse"  # what the policy server serves
    fallback_policy: str = "reuse"
    models: tuple[str, ...] = ("sd-v1-4",)
    profile: str = "reference"
    max_resident_models: int = 2
    work_dir: Path = Path("out/stack")  # state, results and logs go below
    grpc_port: int = 0  # 0: a free port
    metrics: bool = True  # give every service a free port for Prometheus /metrics
    log_level: str = "info"
    with_evaluator: bool = True
    with_trainer: bool = True
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per service name

    @property
    def executor_ids(self) -> list[str]:
        return [f"edge-{i}" for i in range(self.executors)]


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        if config.grpc_port == 0:
            config.grpc_port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self.metrics_ports: dict[str, int] = {}
        self.log_dir = config.work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.certs: DevCerts = ensure_dev_certs(config.work_dir / "certs")

    @property
    def policy_target(self) -> str:
        return f"127.0.0.1:{self.config.grpc_port}"

    @property
    def policy_credentials(self) -> PolicyClientSettings:
        """What a caller of the stack's policy server presents: its CA and token."""
        return PolicyClientSettings(policy_ca=self.certs.ca_cert, policy_token_file=self.certs.token)

    def policy_client(self, timeout_s: float = 0.5) -> PolicyClient:
        """A client of the stack's policy server, with the stack's credentials."""
        return PolicyClient(self.policy_target, timeout_s, self.policy_credentials)

    # ----- services ------------------------------------------------------------------------------
    def service_names(self) -> list[str]:
        names = ["policy_server", "ingest", "aggregator"]
        if self.config.with_evaluator:
            names.append("evaluator")
        if self.config.with_trainer:
            names.append("trainer")
        return names + [f"executor:{i}" for i in self.config.executor_ids]

    def env_for(self, name: str) -> dict[str, str]:
        c = self.config
        env = {
            "EAT_AMQP_URL": c.amqp_url,
            "EAT_LOG_FORMAT": "json",
            "EAT_LOG_LEVEL": c.log_level,
            "EAT_STATE_DIR": str(c.work_dir / "state"),
            "EAT_RESULT_STORE": str(c.work_dir / "results"),
            "EAT_TIME_SCALE": str(c.time_scale),
            "EAT_MODELS": ",".join(c.models),
            "EAT_RECONNECT_MAX_S": "1.0",
        }
        module = name.split(":")[0]
        if c.metrics:
            port = self.metrics_ports.setdefault(name, free_port())
            env["EAT_METRICS_PORT"] = str(port)
        if module == "policy_server":
            env |= {"EAT_GRPC_PORT": str(c.grpc_port), "EAT_GRPC_HOST": "127.0.0.1", "EAT_POLICY": c.policy}
            env |= {"EAT_NODES": str(c.executors), "EAT_PROFILE": c.profile}
        elif module == "ingest":  # refuses gangs the cluster cannot form
            env |= {"EAT_NODES": str(c.executors), "EAT_PROFILE": c.profile}
        elif module == "aggregator":
            env |= {"EAT_POLICY_TARGET": self.policy_target, "EAT_NODES": str(c.executors)}
            env |= {"EAT_FALLBACK_POLICY": c.fallback_policy, "EAT_PROFILE": c.profile}
        elif module == "trainer":
            env |= {"EAT_POLICY_DIR": str(c.work_dir / "policies"), "EAT_NODES": str(c.executors)}
            env |= {"EAT_SERVING_POLICY": c.policy, "EAT_PROFILE": c.profile}
        elif module == "executor":
            env |= {"EAT_EXECUTOR_ID": name.split(":")[1], "EAT_PROFILE": c.profile}
            env |= {"EAT_MAX_RESIDENT_MODELS": str(c.max_resident_models)}
        env |= self.tls_env(module)
        return env | c.extra_env.get(module, {}) | c.extra_env.get(name, {})

    def tls_env(self, module: str) -> dict[str, str]:
        """The policy server's certificate, key and token, or its callers' CA and token."""
        token = {"EAT_POLICY_TOKEN_FILE": str(self.certs.token)}
        if module == "policy_server":
            return token | {
                "EAT_GRPC_TLS_CERT": str(self.certs.server_cert),
                "EAT_GRPC_TLS_KEY": str(self.certs.server_key),
            }
        if module == "aggregator":
            return token | {"EAT_POLICY_CA": str(self.certs.ca_cert)}
        return {}

    def start_service(self, name: str) -> subprocess.Popen:
        module = name.split(":")[0]
        # HF_HUB_OFFLINE: the Hugging Face libraries read it at import; nothing may download weights.
        extra = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        env = {**os.environ, **self.env_for(name), **extra}
        log = (self.log_dir / f"{name.replace(':', '-')}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{module}"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        return process

    def start(self, timeout_s: float = 90.0) -> None:
        """Start every service and wait until all serve. If they do not (a service exits, time runs out,
        or the caller is interrupted), whatever was started is stopped before the error goes up: a
        failed start never leaves service processes behind."""
        try:
            for name in self.service_names():
                self.start_service(name)
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = 90.0, names: list[str] | None = None) -> None:
        """Block until the named services (default: all) serve; StackError if one exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        pending = set(names or self.processes)
        while pending:
            for name in list(pending):
                process = self.processes[name]
                if process.poll() is not None:
                    raise StackError(f"{name} exited with {process.returncode}; see {self.log_path(name)}")
                if self._ready(name):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise StackError(f"not ready after {timeout_s:.0f} s: {sorted(pending)}")
            time.sleep(0.2)

    def _ready(self, name: str) -> bool:
        module = name.split(":")[0]
        if module == "policy_server":
            client = self.policy_client(timeout_s=0.5)
            try:
                return client.healthy()
            finally:
                client.close()
        queue = {
            "ingest": topology.INGEST_QUEUE.name,
            "aggregator": topology.AGGREGATOR_RESULTS.name,
            "evaluator": topology.EVALUATOR_RESULTS.name,
            "trainer": topology.TRAINER_EXPERIENCE.name,
        }.get(module) or topology.executor_queue(name.split(":")[-1]).name
        return self.consumers(queue) > 0

    def consumers(self, queue: str) -> int:
        """Consumers of `queue` now (0 when it does not exist)."""
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.config.amqp_url))
        except pika.exceptions.AMQPConnectionError:
            return 0
        try:
            return connection.channel().queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        finally:
            if connection.is_open:
                connection.close()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name.replace(':', '-')}.log"

    # ----- faults and shutdown -------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(timeout=30)

    def stop(self, grace_s: float = 10.0) -> dict[str, int]:
        """SIGTERM everything (clients' entry first, the policy last), wait, kill stragglers; exit codes."""
        first = ("ingest", "aggregator")
        order = sorted(self.processes, key=lambda n: first.index(n) if n in first else len(first))
        for name in order:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
