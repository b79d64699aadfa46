"""Hybrid execution live, on a private RabbitMQ vhost, a real gRPC policy server and the tiny world's
pipeline with the shipped users' adapters: every request ends once with the split its plan chose, a
device that vanishes mid-phase has its request finished at the edge, an invalid request is
dead-lettered with its reason."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from PIL import Image

from eat.v1 import hybrid_pb2
from services.common import topology
from services.common import vhost as vhosts
from services.common.bus import Bus, Delivery
from services.common.hybrid import PersonalRequest, heartbeat_from_proto, request_to_proto
from services.device.cli import make_finisher
from services.device.service import DeviceService
from services.device.settings import DeviceSettings
from services.edge.models import PersonalModels
from services.edge.service import EdgeService
from services.edge.settings import EdgeSettings
from services.offload.service import OffloadService
from services.offload.settings import OffloadSettings
from services.policy_server.client import OffloadReply, PolicyClient
from services.policy_server.offload_core import OffloadRound
from services.policy_server.server import RunningServer, start_in_thread
from tests.services.policy_server.conftest import settings as policy_settings
from tests.services.rabbit import bus_thread
from tinyworld.scenes import split_scenes
from tinyworld.weights import USER_STYLES

torch.set_num_threads(1)
STEPS = 6
SPEEDS = {"ana": 4.0, "ben": 2.0, "cai": 1.0, "dee": 0.5}  # steps per second: mixed devices
REPO = Path(__file__).resolve().parents[3]
COMPLETED = hybrid_pb2.HybridCompleted.DESCRIPTOR.full_name
FAILED = hybrid_pb2.HybridFailed.DESCRIPTOR.full_name


@pytest.fixture(scope="module")
def policy() -> Iterator[RunningServer]:
    server = start_in_thread(policy_settings())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge_models() -> PersonalModels:
    edge = EdgeSettings.from_env(env={})
    return PersonalModels(edge.pipeline_dir, edge.users_dir, sorted(USER_STYLES), edge.resolution)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    if not vhosts.can_manage():
        pytest.fail("rabbitmqctl is needed for a private virtual host")
    name = f"eat-hybrid-{uuid.uuid4().hex[:8]}"
    yield vhosts.create(name)
    vhosts.delete(name)


class Stack:
    """The coordinator and one edge worker on their own bus threads; devices added per test."""

    def __init__(
        self, url: str, store: Path, policy: RunningServer, models: PersonalModels, offload_policy: str = ""
    ) -> None:
        self.url, self.store, self.stack = url, store, ExitStack()
        self.plans: list[tuple[OffloadRound, OffloadReply]] = []
        client = self.stack.enter_context(PolicyClient(policy.target, timeout_s=10.0))

        def decide(offload_round: OffloadRound, round_id: str) -> OffloadReply:
            reply = client.decide_offload(offload_round, round_id)
            self.plans.append((offload_round, reply))
            return reply

        common = dict(amqp_url=url, result_store=store, log_format="console")
        coordinator = OffloadSettings.from_env(
            env={},
            round_size=8,
            round_window_s=1.0,
            heartbeat_timeout_s=2.0,
            tick_s=0.1,
            offload_policy=offload_policy,
            **common,
        )
        self.coordinator = self._run(lambda bus: OffloadService(coordinator, bus, decide))
        self._run(lambda bus: EdgeService(EdgeSettings.from_env(env={}, **common), bus, models), prefetch=1)

    def _run(self, make: Callable[[Bus], object], prefetch: int = 256) -> object:
        bus = Bus(self.url, prefetch=prefetch, queues=topology.QUEUES)
        service = make(bus)
        service.start()  # type: ignore[attr-defined]
        self.stack.enter_context(bus_thread(bus))
        return service

    def device(self, user: str, finish: Callable | None) -> DeviceService:
        settings = DeviceSettings.from_env(
            env={}, device_user=user, device_speed=SPEEDS[user], amqp_url=self.url, result_store=self.store
        )
        bus = Bus(self.url, prefetch=1, queues=topology.QUEUES)
        service = DeviceService(settings, bus, f"{user}@test", finish)
        service.start()
        self.stack.enter_context(bus_thread(bus))
        return service

    def planned_splits(self) -> dict[str, int]:
        return {p.user_id: p.split_step for _, reply in self.plans for p in reply.plan.placements}


@pytest.fixture
def stack(
    amqp_url: str, tmp_path: Path, policy: RunningServer, edge_models: PersonalModels
) -> Iterator[Stack]:
    running = Stack(amqp_url, tmp_path / "results", policy, edge_models)
    with running.stack:
        yield running


@pytest.fixture
def local_stack(
    amqp_url: str, tmp_path: Path, policy: RunningServer, edge_models: PersonalModels
) -> Iterator[Stack]:
    """A stack whose plans send every request to its device (a device phase to interrupt)."""
    running = Stack(amqp_url, tmp_path / "results", policy, edge_models, offload_policy="all-local")
    with running.stack:
        yield running


class Client:
    """The test's own queue for terminal events, dead letters and (optionally) heartbeats."""

    def __init__(self, url: str, *bindings: tuple[str, str]) -> None:
        self.bus = Bus(url, queues=topology.QUEUES)
        self.queue = topology.Queue(f"test.client-{uuid.uuid4().hex[:8]}", bindings, dead_letter=False)
        self.bus.declare(self.queue)
        self.bus.connect()
        self.seen: list[Delivery] = []

    def submit(self, request: PersonalRequest) -> None:
        message = request_to_proto(request)
        message.reply_to = self.queue.name
        self.bus.publish(topology.HYBRID.name, topology.PERSONAL_REQUEST_KEY, message)

    def wait_for(self, done: Callable[[list[Delivery]], bool], timeout_s: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            assert time.monotonic() < deadline, f"timed out; saw {[d.type_name for d in self.seen]}"
            self.seen.extend(self.bus.drain(self.queue.name, timeout_s=0.05))
        return self.seen

    def ends(self) -> list[Delivery]:
        return [d for d in self.seen if d.type_name in (COMPLETED, FAILED)]


def requests(users: list[str], prefix: str) -> list[PersonalRequest]:
    pairs = split_scenes("validation", len(users))
    return [
        PersonalRequest(f"{prefix}-{i}", user, scene.caption, seed, STEPS, SPEEDS[user], 4.0, 0.05)
        for i, (user, (scene, seed)) in enumerate(zip(users, pairs, strict=True))
    ]


def check_image(image: hybrid_pb2.HybridCompleted) -> None:
    path = Path(urlparse(image.image.uri).path)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == image.image.sha256
    with Image.open(path) as decoded:
        assert decoded.convert("RGB").size == (32, 32)


def test_eight_users_complete_once_with_the_split_their_plan_chose(stack: Stack) -> None:
    for user in SPEEDS:
        stack.device(user, make_finisher(DeviceSettings.from_env(env={}, device_user=user)))
    client = Client(stack.url)
    batch = requests([u for u in SPEEDS for _ in range(2)], "live")
    started = time.monotonic()
    for request in batch:
        client.submit(request)
    client.wait_for(lambda seen: len([d for d in seen if d.type_name in (COMPLETED, FAILED)]) >= 8, 60)
    wall_s = time.monotonic() - started
    client.seen.extend(client.bus.drain(client.queue.name, timeout_s=0.5))  # nothing doubles
    ends = client.ends()
    assert all(d.type_name == COMPLETED for d in ends), [d.parse(hybrid_pb2.HybridFailed) for d in ends]
    done = [d.parse(hybrid_pb2.HybridCompleted) for d in ends]
    assert sorted(e.task_id for e in done) == sorted(r.task_id for r in batch)
    planned = stack.planned_splits()
    for event in done:
        assert not event.fell_back and event.split_step == event.planned_split == planned[event.task_id]
        early_ran = event.early == hybrid_pb2.PHASE_PLACE_EDGE
        assert early_ran == (event.split_step > 0)
        assert (event.late == hybrid_pb2.PHASE_PLACE_DEVICE) == (event.split_step < STEPS)
        check_image(event)
    print_run(done, wall_s)
    client.bus.close()


def print_run(done: list[hybrid_pb2.HybridCompleted], wall_s: float) -> None:
    """The run's figures (pytest -s shows them; docs/hybrid.md quotes a run)."""
    print(f"\n{len(done)} requests in {wall_s:.1f} s")
    for e in sorted(done, key=lambda e: e.task_id):
        print(
            f"{e.task_id} {e.user_id} speed {SPEEDS[e.user_id]} split {e.split_step}/{e.steps} "
            f"edge {e.server_id or '-'} device {e.device_id or '-'} latency {e.latency_s:.2f} s"
        )


def test_a_device_that_vanishes_mid_phase_has_its_request_finished_at_the_edge(local_stack: Stack) -> None:
    stack = local_stack
    client = Client(stack.url, (topology.HYBRID.name, topology.device_heartbeat_key("dee")))
    device = start_device_process(stack, "dee")
    try:
        (request,) = requests(["dee"], "vanish")
        client.submit(request)

        def holding(seen: list[Delivery]) -> bool:
            beats = [
                heartbeat_from_proto(d.parse(hybrid_pb2.DeviceHeartbeat))
                for d in seen
                if "Heart" in d.type_name
            ]
            return any(request.task_id in b.holding for b in beats) or bool(client.ends())

        client.wait_for(holding, 30)
        assert not client.ends()
        device.send_signal(signal.SIGKILL)  # gone mid-phase, its report never sent
    finally:
        device.kill()
        device.wait()
    client.wait_for(lambda seen: bool(client.ends()), 30)
    client.seen.extend(client.bus.drain(client.queue.name, timeout_s=1.0))
    (end,) = client.ends()
    assert end.type_name == COMPLETED, end.parse(hybrid_pb2.HybridFailed).reason
    event = end.parse(hybrid_pb2.HybridCompleted)
    assert event.fell_back and event.split_step == STEPS and event.early == hybrid_pb2.PHASE_PLACE_EDGE
    assert event.late == hybrid_pb2.PHASE_PLACE_NONE and event.planned_split < STEPS
    check_image(event)
    client.bus.close()


def start_device_process(stack: Stack, user: str) -> subprocess.Popen[bytes]:
    """`eat device --simulated` as a real process, slow enough to be caught mid-phase."""
    env = {**os.environ, "EAT_AMQP_URL": stack.url, "EAT_LOG_FORMAT": "console", "EAT_HEARTBEAT_S": "0.3"}
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "device",
        "--user",
        user,
        "--speed",
        "0.5",
        "--simulated",
    ]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_an_invalid_request_is_dead_lettered_with_its_reason(stack: Stack) -> None:
    client = Client(stack.url, (topology.DLX.name, "#"))
    bad = PersonalRequest("bad-1", "ana", "a red circle", 1, 0, -2.0, 4.0, 0.02)
    client.submit(bad)
    client.wait_for(
        lambda seen: any(d.headers.get(topology.REASON_HEADER) for d in seen) and bool(client.ends()), 10
    )
    (dead,) = [d for d in client.seen if d.headers.get(topology.REASON_HEADER)]
    reason = dead.headers[topology.REASON_HEADER]
    assert "steps must be in" in reason and "steps_per_s" in reason
    assert dead.headers[topology.SOURCE_HEADER] == topology.OFFLOAD_REQUESTS.name
    (end,) = client.ends()
    assert end.parse(hybrid_pb2.HybridFailed).reason == reason
    client.bus.close()
