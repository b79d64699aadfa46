"""End-to-end pipeline throughput and Decide latency (`eat bench pipeline`).

Throughput: the whole local stack (ingest, aggregator, policy server, evaluator, sim executors) at
maximum speed (executors finish as soon as they start: time_scale 1e6), a warm-up batch, then `tasks`
submissions published back to back; tasks/s = tasks / (first submission to last terminal event). Every
task must end completed or failed: those with no terminal event within the timeout count as lost.

CPU: each process's CPU per task over the measured batch (Linux /proc, the broker's Erlang VM
included when readable), and, from the services' /metrics, the messages and decisions per task. With
two microbenchmarks (the broker's and a client's CPU per persistent message through one queue, and the
Decide CPU per call of the served policy) they give a floor: the CPU per task of the messages and
Decide calls alone, whatever the services do with them, and the tasks/s it allows on this machine.

Decide latency: the served policy over gRPC (PolicyClient -> policy server), on snapshots of the
warm-mode simulator's own states, measured by the caller (network stack, (de)serialisation and the
policy itself). With no trained checkpoint given, the EAT policy is an untrained agent of the paper's
architecture (Table VIII: 256-unit layers, 10 denoising steps): latency depends on the architecture,
not on the weights, and the report says which it was.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eat.v1 import tasks_pb2
from policy_models.checkpoints import save_checkpoint
from policy_models.config import SimConfig
from policy_models.learning.agents import AgentConfig, build_agent
from policy_models.learning.train import Progress, TrainSettings, checkpoint_config
from policy_models.live import ModelCatalog, Snapshot, live_config, snapshot_from_view
from policy_models.obs import ObservationSpec, batch_of_one
from policy_models.policies import make_policy
from policy_models.sim.env import ClusterEnv
from services.bench.cost import (
    STACK_COUNTERS,
    broker_cost,
    cpu_by_process,
    cpu_ms_per_task,
    cpu_seconds,
    pipeline_floor,
    scrape_counters,
)
from services.bench.sim import machine_info
from services.client import Client
from services.policy_server.client import PolicyClient
from services.stack import Stack, StackConfig

MAX_SPEED = 1e6  # simulated seconds per wall second: sim executors finish at once
MODELS = ("sd-v1-4", "sd-v2-1")
SEED = 0


@dataclass(frozen=True)
class PipelineSettings:
    amqp_url: str
    work_dir: Path
    tasks: int = 2_000
    warmup: int = 100
    executors: int = 4
    policy: str = "reuse"  # what the stack's policy server serves during the throughput run
    decide_policy: str = ""  # Decide latency: "" = EAT, untrained, the paper's architecture
    decide_samples: int = 2_000
    timeout_s: float = 300.0


def untrained_eat(directory: Path, cfg: SimConfig) -> Path:
    """An EAT checkpoint of the paper's architecture with seeded random weights."""
    agent_config = AgentConfig(algorithm="eat")
    agent = build_agent(agent_config, ObservationSpec.from_config(cfg), seed=SEED)
    settings = TrainSettings(sim=cfg, agent=agent_config, out_dir=directory, seed=SEED)
    save_checkpoint(directory, agent.modules(), checkpoint_config(settings, Progress()))
    return directory


def sim_snapshots(cfg: SimConfig, count: int, seed: int = SEED) -> list[Snapshot]:
    """States the warm-mode simulator visits under the reuse heuristic, as live snapshots."""
    env, policy = ClusterEnv(cfg), make_policy("reuse", cfg)
    catalog = ModelCatalog(MODELS[: cfg.n_models])
    policy.begin(1, seed)
    obs, _ = env.reset(seed=seed)
    snapshots = []
    while len(snapshots) < count:
        snapshots.append(snapshot_from_view(env.view(), catalog, cfg.visible_queue))
        obs, _, terminated, truncated, _ = env.step(policy.act(batch_of_one(obs))[0])
        if terminated or truncated:
            obs, _ = env.reset()
    return snapshots


@dataclass(frozen=True)
class DecideMeasurement:
    latency_ms: list[float]  # per call, as the caller sees it
    server_cpu_ms: float  # the policy server's CPU per call (all its threads)
    client_cpu_ms: float  # this process's CPU per call (gRPC client and conversion)

    @property
    def cpu_ms(self) -> dict[str, float]:
        return {"server": self.server_cpu_ms, "client": self.client_cpu_ms}


def measure_decide(client: PolicyClient, snapshots: list[Snapshot], server_pid: int) -> DecideMeasurement:
    """One Decide call per snapshot over `client` (closed after), after a short warm-up: latency and
    CPU per call."""
    try:
        for snapshot in snapshots[:50]:
            client.decide(snapshot)
        times = []
        server_0, client_0 = cpu_seconds(server_pid) or 0.0, time.process_time()
        for snapshot in snapshots:
            started = time.perf_counter()
            client.decide(snapshot)
            times.append((time.perf_counter() - started) * 1e3)
        server_1, client_1 = cpu_seconds(server_pid) or 0.0, time.process_time()
        per_call = 1e3 / len(snapshots)
        return DecideMeasurement(times, (server_1 - server_0) * per_call, (client_1 - client_0) * per_call)
    finally:
        client.close()


def benchmark_submissions(count: int, prefix: str) -> list[tasks_pb2.TaskSubmission]:
    return [
        tasks_pb2.TaskSubmission(
            task_id=f"{prefix}-{i:06d}",
            prompt="a benchmark prompt",
            model=MODELS[i % 2],
            patches=(1, 2, 4)[i % 3],
        )
        for i in range(count)
    ]


def run_pipeline_bench(settings: PipelineSettings) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = live_config(settings.executors, MODELS)
    throughput = run_throughput(settings)
    decide_policy, decide_label = settings.decide_policy, settings.decide_policy
    if not decide_policy:
        decide_policy = "checkpoint:" + str(untrained_eat(settings.work_dir / "eat-untrained", cfg))
        decide_label = "eat (untrained weights, paper architecture)"
    snapshots = sim_snapshots(cfg, settings.decide_samples)
    decide = run_decide_latency(settings, decide_policy, snapshots)
    # The throughput run's own policy, for the floor: its Decide CPU per call.
    served = run_decide_latency(settings, settings.policy, snapshots[: settings.decide_samples // 2])
    broker = broker_cost(settings.amqp_url, benchmark_submissions(5_000, "floor"))
    cores = os.cpu_count() or 1
    return throughput | {
        "decide_ms": {
            "p50": float(np.percentile(decide.latency_ms, 50)),
            "p99": float(np.percentile(decide.latency_ms, 99)),
            "mean": statistics.fmean(decide.latency_ms),
        },
        "decide_policy": decide_label,
        "decide_samples": len(decide.latency_ms),
        "decide_cpu_ms": decide.cpu_ms,
        "served_decide_cpu_ms": served.cpu_ms,
        "broker_cpu_ms_per_message": broker,
        "floor": pipeline_floor(throughput["per_task"], served.cpu_ms, broker, cores),
        "machine": machine_info(),
    }


def policy_slug(policy: str) -> str:
    """A directory name for a policy spec ("checkpoint:/a/b" -> "checkpoint-b")."""
    kind, _, rest = policy.partition(":")
    return kind if not rest else f"{kind}-{Path(rest).name}"


def run_throughput(settings: PipelineSettings) -> dict[str, Any]:
    """Warm-up, then `tasks` submissions back to back through the whole stack."""
    stack = Stack(
        StackConfig(
            amqp_url=settings.amqp_url,
            executors=settings.executors,
            time_scale=MAX_SPEED,
            policy=settings.policy,
            models=MODELS,
            work_dir=settings.work_dir / "stack",
            log_level="warning",
        )
    )
    try:
        stack.start()
        client = Client(settings.amqp_url)
        run_id = uuid.uuid4().hex[:6]
        warm = benchmark_submissions(settings.warmup, f"warm-{run_id}")
        client.submit_many(warm)
        client.wait({s.task_id for s in warm}, settings.timeout_s)
        subs = benchmark_submissions(settings.tasks, f"bench-{run_id}")
        cpu_before, counts_before = cpu_by_process(stack), scrape_counters(stack)
        started = time.time()
        client.submit_many(subs)
        submitted = time.time()
        done = client.wait({s.task_id for s in subs}, settings.timeout_s)
        cpu_after = cpu_by_process(stack)  # the client's own CPU is not counted
        counts_after = scrape_counters(stack)
        wall_s = max((e.received_at for e in done.values()), default=time.time()) - started
        client.close()
    finally:
        codes = stack.stop()
    kinds = [e.kind for e in done.values()]
    return {
        "tasks": settings.tasks,
        "completed": kinds.count("completed"),
        "failed": kinds.count("failed"),
        "lost": settings.tasks - len(done),
        "tasks_per_s": len(done) / wall_s,
        "policy": settings.policy,
        "executors": settings.executors,
        "warmup_tasks": settings.warmup,
        "submit_per_s": settings.tasks / (submitted - started),
        "wall_s": wall_s,
        "cpu_ms_per_task": cpu_ms_per_task(cpu_before, cpu_after, settings.tasks),
        # Services only: the load generator's submissions and the events it reads come on top.
        "per_task": {k: (counts_after[k] - counts_before[k]) / settings.tasks for k in STACK_COUNTERS},
        "exit_codes": codes,
    }


def run_decide_latency(
    settings: PipelineSettings, policy: str, snapshots: list[Snapshot]
) -> DecideMeasurement:
    """A policy server process of its own (no hot swap), queried over gRPC from this process."""
    stack = Stack(
        StackConfig(
            amqp_url=settings.amqp_url,
            executors=settings.executors,
            policy=policy,
            models=MODELS,
            work_dir=settings.work_dir / f"decide-{policy_slug(policy)}",
            log_level="warning",
            extra_env={"policy_server": {"EAT_HOT_SWAP": "0"}},
        )
    )
    stack.start_service("policy_server")
    try:
        stack.wait_ready(60, ["policy_server"])
        pid = stack.processes["policy_server"].pid
        return measure_decide(stack.policy_client(timeout_s=5.0), snapshots, pid)
    finally:
        stack.stop()


def format_report(report: dict[str, Any]) -> str:
    d, floor = report["decide_ms"], report["floor"]
    cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in report["cpu_ms_per_task"].items())
    per_task = report["per_task"]
    return (
        f"{report['tasks']} tasks through the stack ({report['executors']} sim executors, policy "
        f"{report['policy']}): {report['completed']} completed, {report['failed']} failed, "
        f"{report['lost']} lost; {report['tasks_per_s']:.1f} tasks/s end to end\n"
        f"CPU ms per task: {cpu}\n"
        f"Per task, services only: {per_task['published']:.2f} messages published, "
        f"{per_task['consumed']:.2f} consumed, {per_task['decisions']:.2f} decisions\n"
        f"Floor (messages and Decide calls alone, no service logic): {floor['total_ms']:.2f} CPU ms per "
        f"task (messaging {floor['messaging_ms']:.2f}, Decide {floor['decide_ms']:.2f}): at most "
        f"{floor['max_tasks_per_s']:.0f} tasks/s on {floor['cores']} cores\n"
        f"Decide over gRPC, {report['decide_policy']} ({report['decide_samples']} calls): "
        f"p50 {d['p50']:.3f} ms, p99 {d['p99']:.3f} ms"
    )
