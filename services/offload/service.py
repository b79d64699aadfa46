"""The offload coordinator's bus wiring: personal requests in, rounds decided over gRPC, edge batches
and handoffs out, reports and heartbeats in, terminal events out.

A request's delivery is held until its round is planned and everything published for the round is
confirmed, so a coordinator that stops before planning loses nothing: the broker redelivers it.
Reports are acked once the state change they cause is recorded and its messages are confirmed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from eat.v1 import hybrid_pb2
from services.common import topology
from services.common.bus import Bus, Delivery, Hold, Reject
from services.common.events import publish_client_event
from services.common.hybrid import (
    batch_to_proto,
    completed_to_proto,
    device_report_from_proto,
    edge_report_from_proto,
    handoff_to_proto,
    heartbeat_from_proto,
    request_from_proto,
)
from services.offload.core import (
    Complete,
    Coordinator,
    DispatchBatch,
    Effect,
    Fail,
    Round,
    SendHandoff,
    request_problems,
)
from services.offload.settings import OffloadSettings
from services.policy_server.client import OffloadReply, PolicyUnavailable
from services.policy_server.offload_core import OffloadRound

log = structlog.get_logger("offload")
Decide = Callable[[OffloadRound, str], OffloadReply]


class OffloadService:
    """Call `start()` before `bus.run()`; `decide` asks the policy server for a round's plan."""

    def __init__(
        self, settings: OffloadSettings, bus: Bus, decide: Decide, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.decide = decide
        self.clock = clock
        self.core = Coordinator(settings.coordinator())
        self._holds: dict[str, Hold] = {}  # request deliveries, acked once their round is out
        self._releasable: list[Hold] = []
        self._declared: set[str] = set()

    def start(self) -> None:
        self.bus.consume(topology.OFFLOAD_REQUESTS, self.on_request)
        self.bus.consume(topology.OFFLOAD_REPORTS, self.on_report)
        self.bus.every(self.settings.tick_s, self.on_tick)
        for server in self.settings.edge_servers:
            self._declare(topology.edge_queue(server))

    # ----- requests --------------------------------------------------------------------------------
    def on_request(self, delivery: Delivery) -> None:
        request = request_from_proto(delivery.parse(hybrid_pb2.PersonalRequest))
        problems = request_problems(request)
        if problems:
            reason = "invalid personal request: " + "; ".join(problems)
            self._publish([Fail(request.task_id, request.user_id, reason, request.reply_to)])
            raise Reject(reason)
        if not self.core.submit(request, self.clock()):
            log.info("duplicate request ignored", task_id=request.task_id)
            return
        self._holds[request.task_id] = self.bus.hold()
        log.info("request received", task_id=request.task_id, user=request.user_id, steps=request.steps)

    # ----- reports ---------------------------------------------------------------------------------
    def on_report(self, delivery: Delivery) -> None:
        now = self.clock()
        if delivery.type_name == hybrid_pb2.DeviceHeartbeat.DESCRIPTOR.full_name:
            self.core.on_heartbeat(heartbeat_from_proto(delivery.parse(hybrid_pb2.DeviceHeartbeat)), now)
        elif delivery.type_name == hybrid_pb2.EdgeReport.DESCRIPTOR.full_name:
            self._on_edge_report(delivery, now)
        elif delivery.type_name == hybrid_pb2.DeviceReport.DESCRIPTOR.full_name:
            report = device_report_from_proto(delivery.parse(hybrid_pb2.DeviceReport))
            self._require_known(report.task_id)
            self._publish(self.core.on_device_report(report, now))
        else:
            raise Reject(f"not a hybrid report: type {delivery.type_name!r}")

    def _on_edge_report(self, delivery: Delivery, now: float) -> None:
        try:
            report = edge_report_from_proto(delivery.parse(hybrid_pb2.EdgeReport))
        except ValueError as err:
            raise Reject(str(err)) from err
        for outcome in report.outcomes:
            self._require_known(outcome.task_id)
        self._publish(self.core.on_edge_report(report, now))

    def _require_known(self, task_id: str) -> None:
        if not self.core.known(task_id):
            raise Reject(f"report of unknown task {task_id!r}")

    # ----- time ------------------------------------------------------------------------------------
    def on_tick(self) -> None:
        if self._releasable and self.bus.unconfirmed == 0:
            for hold in self._releasable:
                self.bus.release(hold)
            self._releasable.clear()
        now = self.clock()
        while (next_round := self.core.take_round(now)) is not None:
            self._plan(next_round)
        self._publish(self.core.tick(self.clock()))

    def _plan(self, plan_round: Round) -> None:
        started = time.perf_counter()
        try:
            reply = self.decide(plan_round.offload_round, plan_round.round_id)
            effects = self.core.apply_plan(plan_round, reply.plan, reply.policy_name, self.clock())
            policy = reply.policy_name
        except PolicyUnavailable as err:
            log.warning("no plan from the policy server; every device runs its whole request", error=str(err))
            effects, policy = self.core.plan_locally(plan_round, self.clock()), "fallback"
        log.info(
            "round planned",
            round=plan_round.round_id,
            policy=policy,
            requests=len(plan_round.requests),
            decide_ms=round(1000 * (time.perf_counter() - started), 1),
        )
        self._publish(effects)
        for request in plan_round.requests:
            hold = self._holds.pop(request.task_id, None)
            if hold is not None:
                self._releasable.append(hold)

    # ----- effects ---------------------------------------------------------------------------------
    def _publish(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, DispatchBatch):
                self._dispatch(effect)
            elif isinstance(effect, SendHandoff):
                user = effect.handoff.member.user_id
                self._declare(topology.device_queue(user))
                message = handoff_to_proto(effect.handoff)
                self.bus.publish(topology.HYBRID.name, topology.device_key(user), message)
                log.info("request sent to its device", task_id=effect.handoff.member.task_id, user=user)
            elif isinstance(effect, Complete):
                message = completed_to_proto(effect.event)
                publish_client_event(self.bus, "completed", message, effect.reply_to, effect.event.task_id)
                log.info("request completed", task_id=effect.event.task_id, split=effect.event.split_step)
            elif isinstance(effect, Fail):
                failed = hybrid_pb2.HybridFailed(
                    task_id=effect.task_id, user_id=effect.user_id, reason=effect.reason
                )
                publish_client_event(self.bus, "failed", failed, effect.reply_to, effect.task_id)
                log.warning("request failed", task_id=effect.task_id, reason=effect.reason)

    def _dispatch(self, effect: DispatchBatch) -> None:
        batch = effect.batch
        self._declare(topology.edge_queue(batch.server_id))
        self.bus.publish(topology.HYBRID.name, topology.edge_key(batch.server_id), batch_to_proto(batch))
        log.info(
            "edge batch dispatched",
            batch=batch.batch_id,
            split=batch.split_step,
            tasks=[m.task_id for m in batch.members],
            adapter=batch.adapter_user,
        )

    def _declare(self, queue: topology.Queue) -> None:
        if queue.name not in self._declared:
            self.bus.declare(queue)
            self._declared.add(queue.name)
