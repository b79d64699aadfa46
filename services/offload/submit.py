"""`eat personal submit`: send personal requests to the offload coordinator and wait for their ends."""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from eat.v1 import hybrid_pb2
from services.common import topology
from services.common.bus import Bus
from services.common.hybrid import PersonalRequest, request_to_proto
from services.common.settings import ServiceSettings

COMPLETED = hybrid_pb2.HybridCompleted.DESCRIPTOR.full_name
FAILED = hybrid_pb2.HybridFailed.DESCRIPTOR.full_name


def add_personal(commands: argparse._SubParsersAction) -> None:
    personal = commands.add_parser("personal", help="personal requests (hybrid edge/device execution)")
    actions = personal.add_subparsers(dest="personal", required=True)
    p = actions.add_parser("submit", help="send requests and print where each one ran")
    p.add_argument("prompt", help='e.g. "two small red triangles on the left, blue background"')
    p.add_argument("--user", action="append", required=True, help="a user (repeat for several requests)")
    p.add_argument("--speed", type=float, action="append", help="each user's device steps/s (default 2)")
    p.add_argument("--latency-weight", type=float, default=0.02, help="accuracy per second (default 0.02)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every end")
    p.add_argument("--amqp-url", default=ServiceSettings.from_env().amqp_url)
    p.set_defaults(handler=_run_submit)


def requests_of(args: argparse.Namespace) -> list[PersonalRequest]:
    speeds = args.speed or [2.0]
    return [
        PersonalRequest(
            task_id=f"p-{uuid.uuid4().hex[:10]}",
            user_id=user,
            prompt=args.prompt,
            seed=args.seed + i,
            steps=args.steps,
            steps_per_s=speeds[min(i, len(speeds) - 1)],
            memory_gib=4.0,
            latency_weight=args.latency_weight,
        )
        for i, user in enumerate(args.user)
    ]


def _run_submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    bus = Bus(args.amqp_url)
    reply = topology.Queue(f"eat.client.personal-{uuid.uuid4().hex[:8]}", dead_letter=False)
    bus.declare(reply)
    bus.connect()
    requests = [PersonalRequest(**{**r.__dict__, "reply_to": reply.name}) for r in requests_of(args)]
    try:
        for request in requests:
            bus.publish(topology.HYBRID.name, topology.PERSONAL_REQUEST_KEY, request_to_proto(request))
        failed = _wait(bus, reply.name, {r.task_id for r in requests}, args.timeout)
    finally:
        bus._channel.queue_delete(reply.name)
        bus.close()
    return 1 if failed else 0


def _wait(bus: Bus, queue: str, open_ids: set[str], timeout_s: float) -> int:
    deadline, failed = time.monotonic() + timeout_s, 0
    while open_ids and time.monotonic() < deadline:
        for delivery in bus.drain(queue, timeout_s=0.2):
            if delivery.type_name == COMPLETED:
                done = delivery.parse(hybrid_pb2.HybridCompleted)
                open_ids.discard(done.task_id)
                where = f"edge {done.server_id or '-'} [0,{done.split_step}) device {done.device_id or '-'}"
                print(
                    f"{done.task_id} {done.user_id}: split {done.split_step}/{done.steps} ({where}) "
                    f"{done.latency_s:.2f} s {done.image.uri}"
                )
            elif delivery.type_name == FAILED:
                gone = delivery.parse(hybrid_pb2.HybridFailed)
                open_ids.discard(gone.task_id)
                failed += 1
                print(f"{gone.task_id} {gone.user_id}: failed: {gone.reason}")
    if open_ids:
        print(f"no end within {timeout_s} s for {sorted(open_ids)}", file=sys.stderr)
    return failed + len(open_ids)
