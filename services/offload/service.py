"""The offload coordinator's bus wiring: personal requests in, rounds decided over gRPC, edge batches
and handoffs out, reports and heartbeats in, terminal events out.

Every change is journaled before anything is published or acked (`journal`): a request is acked once
its track is on disk, a report once the change it causes is on disk and its messages are confirmed. A
restarted coordinator reloads the unfinished requests, publishes again what it had decided to send but
saw no confirm for, and answers a duplicate of an ended request with the same terminal event.

`DecideOffload` runs on a worker thread and hands its plan back to the bus thread, so heartbeats and
reports keep flowing while a round is decided.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial

import structlog
from google.protobuf.message import Message

from eat.v1 import hybrid_pb2
from services.common import topology
from services.common.bus import Bus, Delivery, Reject
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
from services.offload.journal import Kind, OffloadJournal, Outgoing
from services.offload.settings import OffloadSettings
from services.policy_server.client import OffloadReply, PolicyUnavailable
from services.policy_server.offload_core import OffloadRound

log = structlog.get_logger("offload")
Decide = Callable[[OffloadRound, str], OffloadReply]
MESSAGE_TYPES: dict[Kind, type[Message]] = {
    "batch": hybrid_pb2.EdgeBatch,
    "handoff": hybrid_pb2.LatentHandoff,
    "completed": hybrid_pb2.HybridCompleted,
    "failed": hybrid_pb2.HybridFailed,
}


class OffloadService:
    """Call `start()` before `bus.run()` and `close()` after it; `decide` asks the policy server for a
    round's plan (on a worker thread)."""

    def __init__(
        self, settings: OffloadSettings, bus: Bus, decide: Decide, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.decide = decide
        self.clock = clock
        self.journal = OffloadJournal(settings.journal_path)
        # Round ids restart with the process: the start time keeps them apart from its predecessors'.
        self.core = Coordinator(settings.coordinator(), session=f"{int(clock() * 1000):x}-")
        self._deciding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-decide")
        self._declared: set[str] = set()

    def start(self) -> None:
        self._restore()
        self.bus.consume(topology.OFFLOAD_REQUESTS, self.on_request)
        self.bus.consume(topology.OFFLOAD_REPORTS, self.on_report)
        self.bus.every(self.settings.tick_s, self.on_tick)
        # First thing on the bus thread, before any delivery: what the last coordinator left unconfirmed.
        self.bus.call_later(0.0, self._resend)
        for server in self.settings.edge_servers:
            self._declare(topology.edge_queue(server))

    def close(self) -> None:
        self._deciding.shutdown(wait=False, cancel_futures=True)
        self.journal.close()

    def _restore(self) -> None:
        now = self.clock()
        tracks = self.journal.unfinished()
        for track in tracks:
            self.core.restore(track, now)
        if tracks:
            log.info("unfinished requests restored from the journal", requests=len(tracks))

    def _resend(self) -> None:
        pending = self.journal.unsent()
        for out in pending:
            self._send(out)
        self._mark_sent(pending)
        if pending:
            log.info("unconfirmed messages sent again", messages=len(pending))

    # ----- requests --------------------------------------------------------------------------------
    def on_request(self, delivery: Delivery) -> None:
        request = request_from_proto(delivery.parse(hybrid_pb2.PersonalRequest))
        problems = request_problems(request)
        if problems:
            reason = "invalid personal request: " + "; ".join(problems)
            self._send(self._outgoing(Fail(request.task_id, request.user_id, reason, request.reply_to)))
            raise Reject(reason)
        ended = self.journal.terminal(request.task_id)
        if ended is not None:
            # A client asking again learns the outcome; the request does not run twice.
            self._send(replace(ended, target=request.reply_to))
            log.info("request already ended; its terminal event sent again", task_id=request.task_id)
            return
        if not self.core.submit(request, self.clock()):
            log.info("duplicate request ignored", task_id=request.task_id)
            return
        self._commit([])
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
            self._commit(self.core.on_device_report(report, now))
        else:
            raise Reject(f"not a hybrid report: type {delivery.type_name!r}")

    def _on_edge_report(self, delivery: Delivery, now: float) -> None:
        try:
            report = edge_report_from_proto(delivery.parse(hybrid_pb2.EdgeReport))
        except ValueError as err:
            raise Reject(str(err)) from err
        for outcome in report.outcomes:
            self._require_known(outcome.task_id)
        self._commit(self.core.on_edge_report(report, now))

    def _require_known(self, task_id: str) -> None:
        # An ended request is no longer in memory but in the journal: its late reports are ignored.
        if not self.core.known(task_id) and not self.journal.known(task_id):
            raise Reject(f"report of unknown task {task_id!r}")

    # ----- time and rounds -------------------------------------------------------------------------
    def on_tick(self) -> None:
        now = self.clock()
        while (next_round := self.core.take_round(now)) is not None:
            self._deciding.submit(self._decide, next_round)
        self._commit(self.core.tick(now))

    def _decide(self, plan_round: Round) -> None:
        """On the worker thread: ask for the plan, then hand it to the bus thread (None: no plan)."""
        started = time.perf_counter()
        reply: OffloadReply | None = None
        try:
            reply = self.decide(plan_round.offload_round, plan_round.round_id)
        except PolicyUnavailable as err:
            log.warning("no plan from the policy server; every device runs its whole request", error=str(err))
        except Exception:  # a failing client must not strand the round's requests
            log.exception("deciding the round failed; every device runs its whole request")
        decide_ms = round(1000 * (time.perf_counter() - started), 1)
        self.bus.call_threadsafe(partial(self._planned, plan_round, reply, decide_ms))

    def _planned(self, plan_round: Round, reply: OffloadReply | None, decide_ms: float) -> None:
        """On the bus thread: the round's batches and handoffs, journaled, then sent."""
        now, effects, policy = self.clock(), None, "fallback"
        if reply is not None:
            try:
                effects = self.core.apply_plan(plan_round, reply.plan, reply.policy_name, now)
                policy = reply.policy_name
            except Exception:  # a plan that does not fit its round: run it locally rather than lose it
                log.exception("the plan does not fit its round; every device runs its whole request")
        if effects is None:
            effects = self.core.plan_locally(plan_round, now)
        log.info(
            "round planned",
            round=plan_round.round_id,
            policy=policy,
            requests=len(plan_round.requests),
            decide_ms=decide_ms,
        )
        self._commit(effects)

    # ----- effects ---------------------------------------------------------------------------------
    def _commit(self, effects: Sequence[Effect]) -> None:
        """Journal what changed and what it sends, then send it; the outbox rows go once confirmed."""
        outgoing = self.journal.commit(self.core.take_dirty(), [self._outgoing(e) for e in effects])
        for out in outgoing:
            self._send(out)
        self._mark_sent(outgoing)

    def _mark_sent(self, outgoing: Sequence[Outgoing]) -> None:
        seqs = [out.seq for out in outgoing]
        if seqs:
            self.bus.after_confirms(lambda: self.journal.sent(seqs))

    def _outgoing(self, effect: Effect) -> Outgoing:
        if isinstance(effect, DispatchBatch):
            batch = effect.batch
            return Outgoing("batch", batch.batch_id, batch.server_id, _bytes(batch_to_proto(batch)))
        if isinstance(effect, SendHandoff):
            handoff = effect.handoff
            body = _bytes(handoff_to_proto(handoff))
            member = handoff.member
            return Outgoing("handoff", member.task_id, member.user_id, body, expires_at=handoff.report_by)
        if isinstance(effect, Complete):
            body = _bytes(completed_to_proto(effect.event))
            return Outgoing("completed", effect.event.task_id, effect.reply_to, body)
        failed = hybrid_pb2.HybridFailed(task_id=effect.task_id, user_id=effect.user_id, reason=effect.reason)
        return Outgoing("failed", effect.task_id, effect.reply_to, _bytes(failed))

    def _send(self, out: Outgoing) -> None:
        message = MESSAGE_TYPES[out.kind].FromString(out.body)
        if out.kind == "batch":
            self._declare(topology.edge_queue(out.target))
            self.bus.publish(topology.HYBRID.name, topology.edge_key(out.target), message)
            log.info("edge batch dispatched", batch=out.task_id, server=out.target)
        elif out.kind == "handoff":
            self._declare(topology.device_queue(out.target))
            # Past its report deadline the request is taken back: the handoff must not wait for a
            # device that starts later (the broker dead-letters it instead).
            ttl = max(0.001, out.expires_at - self.clock()) if out.expires_at else None
            key = topology.device_key(out.target)
            self.bus.publish(topology.HYBRID.name, key, message, expiration_s=ttl)
            log.info("request sent to its device", task_id=out.task_id, user=out.target)
        else:
            publish_client_event(self.bus, out.kind, message, out.target, out.task_id)
            reason = getattr(message, "reason", "")
            log.info("terminal event sent", task_id=out.task_id, kind=out.kind, reason=reason or None)

    def _declare(self, queue: topology.Queue) -> None:
        if queue.name not in self._declared:
            self.bus.declare(queue)
            self._declared.add(queue.name)


def _bytes(message: Message) -> bytes:
    return message.SerializeToString()
