"""`eat up`, `eat submit`, `eat status` and `eat trace`: the stack from the command line."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
import unicodedata
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pika

from eat.v1 import cluster_pb2, common_pb2, tasks_pb2
from policy_models.config import SimConfig
from policy_models.evaluation import DEFAULT_SEED_BASE, first_episodes, make_setting
from policy_models.live import Snapshot, live_config
from policy_models.policies import make_policy
from services.client import Client
from services.common.convert import snapshot_from_proto
from services.common.settings import ServiceSettings
from services.common.topology import EVENTS, SNAPSHOT_KEY
from services.stack import Stack, StackConfig, StackError
from services.trace import markdown_summary, paper_trace, read_trace, replay, write_trace

DEFAULT_AMQP = ServiceSettings.amqp_url


def printable(text: object, keep_newlines: bool = False) -> str:
    """`text` safe to print on a terminal: control and format characters (escape sequences, bidi
    overrides, line separators) are shown escaped, never sent raw. What came off the wire (executor
    ids, prompts, reasons) was written by whoever could publish, and an escape code in it would drive
    the terminal (clear the screen, retitle it, hide the lines before it)."""
    return "".join(
        ch if (ch == "\n" and keep_newlines) or not _is_control(ch) else _escaped(ch) for ch in str(text)
    )


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def add_commands(commands: argparse._SubParsersAction) -> None:
    _add_up(commands)
    _add_submit(commands)
    _add_status(commands)
    _add_trace(commands)


def _amqp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amqp-url", default=DEFAULT_AMQP, help="RabbitMQ URL (default: local guest)")


def _stack_options(p: argparse.ArgumentParser) -> None:
    _amqp(p)
    p.add_argument("--executors", type=int, default=4, help="sim executors (default 4)")
    p.add_argument("--time-scale", type=float, default=100.0, help="simulated s per wall s (default 100)")
    p.add_argument("--policy", default="reuse", help="what the policy server serves (name or checkpoint:DIR)")
    p.add_argument("--work-dir", type=Path, default=Path("out/stack"), help="state, results and logs")


def _add_up(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("up", help="start the whole stack locally (Ctrl-C stops it cleanly)")
    _stack_options(p)
    p.add_argument("--workload", choices=["paper"], help="replay a paper workload, print its table, stop")
    p.add_argument("--rate", type=float, default=0.05, help="workload arrival rate, tasks/s (default 0.05)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED_BASE, help="workload seed")
    p.add_argument("--json", type=Path, help="write the workload summary here")
    p.set_defaults(handler=run_up)


def _add_submit(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("submit", help="submit one task and wait for its result")
    _amqp(p)
    p.add_argument("prompt")
    p.add_argument("--model", default="sd-v1-4")
    p.add_argument("--patches", type=int, default=1)
    p.add_argument("--task-id", help="default: a fresh one")
    p.add_argument("--min-quality", type=float, default=0.0)
    p.add_argument("--deadline-s", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the result")
    p.set_defaults(handler=run_submit)


def _add_status(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("status", help="show the cluster and the queue")
    _amqp(p)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run_status)


def _add_trace(commands: argparse._SubParsersAction) -> None:
    trace = commands.add_parser("trace", help="workload traces").add_subparsers(dest="trace", required=True)
    p = trace.add_parser("make", help="write the simulator's workload for a seed as a trace")
    p.add_argument("out", type=Path)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED_BASE)
    p.add_argument("--models", nargs="+", default=["sd-v1-4"])
    p.set_defaults(handler=run_trace_make)
    p = trace.add_parser("replay", help="replay a trace through a running stack")
    _amqp(p)
    p.add_argument("file", type=Path)
    p.add_argument("--time-scale", type=float, default=100.0, help="must match the stack's")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", type=Path)
    p.set_defaults(handler=run_trace_replay)


# ----- handlers ------------------------------------------------------------------------------------
def broker_reachable(amqp_url: str) -> bool:
    url = urlparse(amqp_url)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def _need_broker(amqp_url: str) -> bool:
    if broker_reachable(amqp_url):
        return True
    print(
        f"RabbitMQ is not reachable at {amqp_url}. Start it with `rabbitmq-server -detached` (or run "
        "`scripts/ensure_rabbitmq.sh`, which installs it with apt-get when missing), then try again.",
        file=sys.stderr,
    )
    return False


def run_up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not _need_broker(args.amqp_url):
        return 2
    config = StackConfig(
        amqp_url=args.amqp_url,
        executors=args.executors,
        time_scale=args.time_scale,
        policy=args.policy,
        work_dir=args.work_dir,
    )
    stack = Stack(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"starting {len(stack.service_names())} services (logs in {stack.log_dir}) ...")
    try:
        stack.start()
        print(f"stack is up: policy server on 127.0.0.1:{config.grpc_port}, {config.executors} executors")
        print(f"policy server TLS: CA and token in {stack.certs.directory}")
        ports = ", ".join(f"{name} :{port}" for name, port in stack.metrics_ports.items())
        print(f"Prometheus /metrics: {ports}")
        if args.workload:
            return _run_workload(args, config)
        print("Ctrl-C stops it.")
        while not stop.is_set():
            if any(p.poll() is not None for p in stack.processes.values()):
                print("a service exited; stopping", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    except StackError as err:
        print(f"eat up: {err}", file=sys.stderr)
        return 1
    finally:
        codes = stack.stop()
        print("stopped: " + ", ".join(f"{name}={code}" for name, code in codes.items()))


def _run_workload(args: argparse.Namespace, config: StackConfig) -> int:
    cfg = live_config(config.executors, config.models, config.max_resident_models, arrival_rate=args.rate)
    tasks = paper_trace(cfg, args.seed, config.models)
    print(f"replaying a paper workload: {len(tasks)} tasks, rate {args.rate}/s, seed {args.seed},")
    print(f"  {config.executors} sim executors at {config.time_scale:g}x, policy {config.policy}")
    client = Client(config.amqp_url)
    try:
        result = replay(client, tasks, config.time_scale, timeout_s=120.0)
    finally:
        client.close()
    live = result.summary()
    twin = simulated_twin(config.policy, cfg, args.seed)
    print("\n## The live stack and its simulated twin (same workload; times in model seconds)\n")
    print(markdown_summary({"live stack": live, "simulator": twin}))
    print(f"\nwall time of the live run: {live['wall_s']:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"live": live, "simulator": twin}, indent=2) + "\n")
    return 0 if not result.lost else 1


def simulated_twin(policy: str, cfg: SimConfig, seed: int) -> dict[str, float | int]:
    """The simulator's run of the same workload and policy (warm mode, the live cluster's shape)."""
    (stats,) = first_episodes(make_policy(policy, cfg), cfg, [seed])
    return {
        "tasks": stats.arrived,
        "completed": stats.launched,
        "failed": 0,
        "lost": stats.unserved,
        "quality": stats.mean_quality,
        "response_s": stats.mean_response_s,
        "reload_rate": stats.reload_rate,
        "steps": stats.sum_steps / max(stats.launched, 1),
    }


def run_submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not _need_broker(args.amqp_url):
        return 2
    task_id = args.task_id or f"cli-{uuid.uuid4().hex[:12]}"
    submission = tasks_pb2.TaskSubmission(
        task_id=task_id,
        prompt=args.prompt,
        model=args.model,
        patches=args.patches,
        qos=common_pb2.Qos(min_quality=args.min_quality, deadline_s=args.deadline_s),
    )
    client = Client(args.amqp_url)
    try:
        client.submit(submission)
        print(f"submitted {task_id}")
        event = client.wait({task_id}, args.timeout).get(task_id)
    finally:
        client.close()
    if event is None:
        print(f"no result within {args.timeout:g} s (the task is still queued or running)", file=sys.stderr)
        return 1
    print(f"{event.kind}:\n{printable(event.message, keep_newlines=True)}")
    return 0 if event.kind == "completed" else 1


def run_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not _need_broker(args.amqp_url):
        return 2
    message, counts = _latest_snapshot(args.amqp_url, args.timeout)
    if message is None:
        print(f"no aggregator snapshot within {args.timeout:g} s: is the stack up?", file=sys.stderr)
        return 1
    snapshot = snapshot_from_proto(message)
    if args.json:
        servers = [vars(s) | {"resident_models": list(s.resident_models)} for s in snapshot.servers]
        queue = [vars(t) for t in snapshot.queue]
        print(json.dumps({"tasks": counts, "servers": servers, "queue": queue}, indent=2))
        return 0
    print_status(snapshot, counts)
    return 0


def print_status(snapshot: Snapshot, counts: dict) -> None:
    """The aggregator's view, every name from the wire made printable."""
    tasks = ", ".join(f"{printable(k)} {printable(v)}" for k, v in sorted(counts.items()))
    print("tasks: " + (tasks or "none"))
    print(f"servers ({len(snapshot.servers)} up):")
    for s in snapshot.servers:
        state = "idle" if s.idle else f"busy {s.remaining_s:.1f} s"
        models = printable(", ".join(s.resident_models) or "-")
        print(f"  {printable(s.server_id):<12} {state:<14} speed {s.speed:g}  models {models}")
    print(f"queue ({snapshot.total_queued} waiting, first {len(snapshot.queue)}):")
    for t in snapshot.queue:
        print(
            f"  {printable(t.task_id):<28} k={t.patches} {printable(t.model):<10} waited {t.waiting_s:.1f} s"
        )


def _latest_snapshot(amqp_url: str, timeout_s: float) -> tuple[cluster_pb2.ClusterSnapshot | None, dict]:
    """The next snapshot the aggregator publishes (it does so every second)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue, EVENTS.name, routing_key=SNAPSHOT_KEY)
        for method, props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=timeout_s):
            if method is None:
                return None, {}
            message = cluster_pb2.ClusterSnapshot.FromString(body)
            counts = {k.removeprefix("x-eat-"): v for k, v in (props.headers or {}).items()}
            return message, counts
        return None, {}
    finally:
        connection.close()


def run_trace_make(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cfg = make_setting(args.nodes, args.rate, "paper", "reference")
    tasks = paper_trace(cfg, args.seed, args.models)
    write_trace(tasks, args.out)
    print(f"wrote {len(tasks)} tasks to {args.out} (N={args.nodes}, rate {args.rate}, seed {args.seed})")
    return 0


def run_trace_replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not _need_broker(args.amqp_url):
        return 2
    tasks = read_trace(args.file)
    client = Client(args.amqp_url)
    started = time.monotonic()
    try:
        result = replay(client, tasks, args.time_scale, args.timeout)
    finally:
        client.close()
    summary = result.summary()
    print(f"## Replay of {args.file} ({time.monotonic() - started:.1f} s wall)\n")
    print(markdown_summary({"live stack": summary}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if not result.lost else 1
