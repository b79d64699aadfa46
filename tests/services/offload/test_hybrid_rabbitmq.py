"""Hybrid execution live, on a private RabbitMQ vhost, a real gRPC policy server and the tiny world's
pipeline with the shipped users' adapters: every request ends once with the split its plan chose, a
device that vanishes mid-phase has its request finished at the edge, an invalid request is
dead-lettered with its reason, a coordinator killed mid-round is replaced by one that ends every request
once from its journal (and answers a duplicate with the same terminal event), and a handoff no device
takes expires at its report deadline."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
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
from services.common.hybrid import (
    DeviceHeartbeat,
    PersonalRequest,
    heartbeat_from_proto,
    heartbeat_to_proto,
    request_to_proto,
)
from services.device.cli import make_finisher
from services.device.service import DeviceService
from services.device.settings import DeviceSettings
from services.edge.models import PersonalModels
from services.edge.service import EdgeService
from services.edge.settings import EdgeSettings
from services.offload.core import Stage
from services.offload.service import OffloadService
from services.offload.settings import OffloadSettings
from services.policy_server.client import OffloadReply, PolicyClient, PolicyUnavailable
from services.policy_server.offload_core import OffloadRound, Placement, PlannedBatch, RoundPlan, ServerPlan
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
            state_dir=store.parent / "state",  # the coordinator's journal, one per test
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


# ----- restarts and expiry ---------------------------------------------------------------------------
class Crash(Exception):
    """Ends a bus loop the way a killed process ends: no clean shutdown of the service."""


def crash() -> None:
    raise Crash("the coordinator dies")


def run_until_crash(bus: Bus) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(Crash):
            bus.run()

    thread = threading.Thread(target=run, name="coordinator-to-kill", daemon=True)
    thread.start()
    return thread


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


class HeldDecision:
    """A DecideOffload that waits for the test's go: ids[0] and ids[1] share an edge batch to step 3,
    ids[2] runs on its device."""

    def __init__(self) -> None:
        self.asked, self.go, self.calls = threading.Event(), threading.Event(), 0

    def __call__(self, offload_round: OffloadRound, round_id: str) -> OffloadReply:
        self.calls += 1
        self.asked.set()
        assert self.go.wait(10)
        a, b, c = (u.user_id for u in offload_round.users)
        plan = RoundPlan(
            (Placement(a, "edge-0", 0, 3), Placement(b, "edge-0", 0, 3), Placement(c)),
            (ServerPlan("edge-0", (PlannedBatch((a, b), 3),)),),
        )
        return OffloadReply(plan, "test-plan", "", 0, time.time())


def restart_settings(url: str, tmp_path: Path, **changes: object) -> OffloadSettings:
    values: dict[str, object] = dict(
        amqp_url=url,
        result_store=tmp_path / "results",
        state_dir=tmp_path / "state",
        log_format="console",
        round_size=3,
        round_window_s=5.0,
        heartbeat_timeout_s=5.0,
        tick_s=0.05,
    )
    return OffloadSettings.from_env(env={}, **{**values, **changes})


def test_a_coordinator_killed_after_dispatch_is_replaced_and_every_request_ends_once(
    amqp_url: str, tmp_path: Path, edge_models: PersonalModels
) -> None:
    settings, decide = restart_settings(amqp_url, tmp_path), HeldDecision()
    client = Client(amqp_url)
    with ExitStack() as stack:
        edge_bus = Bus(amqp_url, prefetch=1)
        edge = EdgeSettings.from_env(env={}, amqp_url=amqp_url, result_store=settings.result_store)
        EdgeService(edge, edge_bus, edge_models).start()
        stack.enter_context(bus_thread(edge_bus))
        first = OffloadService(settings, Bus(amqp_url), decide)
        first.start()
        first_thread = run_until_crash(first.bus)
        batch = requests(["ana", "ben", "cai"], "restart")
        for request in batch:
            client.submit(request)
        assert decide.asked.wait(10)
        # The round is being decided: a heartbeat is still handled meanwhile (the call is off the bus).
        beat = heartbeat_to_proto(DeviceHeartbeat("zed", "zed@test", 1.0, (), True))
        client.bus.publish(topology.HYBRID.name, topology.device_heartbeat_key("zed"), beat)
        wait_until(lambda: "zed" in first.core.last_seen, 5, "the heartbeat was handled")
        decide.go.set()

        def at_devices() -> bool:
            tracks = list(first.core.tracks.values())
            return len(tracks) == 3 and all(t.stage is Stage.DEVICE for t in tracks)

        wait_until(at_devices, 20, "the round reached the devices")
        first.bus.call_threadsafe(crash)  # dispatched; no device has reported (none runs yet)
        first_thread.join(10)
        assert not first_thread.is_alive()
        first.journal.close()

        second = OffloadService(settings, Bus(amqp_url), decide)
        second.start()
        stack.enter_context(bus_thread(second.bus))
        for user in ("ana", "ben", "cai"):
            start_simulated_device(stack, amqp_url, user)
        client.wait_for(lambda seen: len(client.ends()) >= 3, 20)
        client.seen.extend(client.bus.drain(client.queue.name, timeout_s=0.5))  # nothing doubles
        ends = client.ends()
        assert len(ends) == 3 and all(d.type_name == COMPLETED for d in ends)
        done = {e.task_id: e for e in (d.parse(hybrid_pb2.HybridCompleted) for d in ends)}
        assert sorted(done) == sorted(r.task_id for r in batch)
        assert sorted(e.split_step for e in done.values()) == [0, 3, 3]
        assert not any(e.fell_back for e in done.values()) and decide.calls == 1
        first_event = next(d.body for d in ends if d.correlation_id == batch[0].task_id)

        client.submit(batch[0])  # asked again after its end: the same event, no second run
        client.wait_for(lambda seen: len(client.ends()) >= 4, 10)
        client.seen.extend(client.bus.drain(client.queue.name, timeout_s=0.5))
        assert len(client.ends()) == 4 and client.ends()[3].body == first_event
        assert decide.calls == 1 and not second.core.tracks
    second.close()
    client.bus.close()


def start_simulated_device(stack: ExitStack, url: str, user: str) -> None:
    settings = DeviceSettings.from_env(
        env={}, device_user=user, device_speed=12.0, device_simulated=True, amqp_url=url, heartbeat_s=0.3
    )
    bus = Bus(url, prefetch=1)
    DeviceService(settings, bus, f"{user}@test", None).start()
    stack.enter_context(bus_thread(bus))


def test_a_handoff_no_device_takes_expires_at_its_report_deadline(amqp_url: str, tmp_path: Path) -> None:
    def policy_down(offload_round: OffloadRound, round_id: str) -> OffloadReply:
        raise PolicyUnavailable("the policy server is down")  # all-local: a step-0 handoff

    settings = restart_settings(
        amqp_url, tmp_path, round_size=1, report_slack=1.0, report_grace_s=0.5, heartbeat_timeout_s=30.0
    )
    client = Client(amqp_url, (topology.DLX.name, "#"))
    coordinator = OffloadService(settings, Bus(amqp_url), policy_down)
    coordinator.start()
    with bus_thread(coordinator.bus):
        (request,) = requests(["ben"], "expire")
        request = PersonalRequest(**{**request.__dict__, "steps": 2, "steps_per_s": 4.0})
        client.submit(request)  # 2 steps at 4 steps/s + 0.5 s grace: report by ~1 s after planning
        client.wait_for(lambda seen: any(d.headers.get("x-first-death-reason") for d in seen), 10)
    (dead,) = [d for d in client.seen if d.headers.get("x-first-death-reason")]
    assert dead.headers["x-first-death-reason"] == "expired"
    assert dead.headers["x-first-death-queue"] == topology.device_queue("ben").name
    left = client.bus._channel.queue_declare(topology.device_queue("ben").name, passive=True)
    assert left.method.message_count == 0  # a device started now finds nothing to finish
    coordinator.close()
    client.bus.close()
