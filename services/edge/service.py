"""The edge worker's bus wiring: one EdgeBatch at a time from eat.edge.<server>, its handoffs to the
users' devices and its report to the coordinator. The batch's delivery is acked once the handoffs and
the report are confirmed, so a worker that stops mid-batch loses nothing: the batch is redelivered."""

from __future__ import annotations

import time

import structlog

from eat.v1 import hybrid_pb2
from services.common import topology
from services.common.bus import Bus, Delivery, Reject
from services.common.hybrid import (
    EdgeBatch,
    EdgeOutcome,
    EdgeReport,
    Handoff,
    OutcomeKind,
    batch_from_proto,
    edge_report_to_proto,
    handoff_to_proto,
)
from services.edge.core import batch_problems
from services.edge.models import PersonalModels, latents_of
from services.edge.settings import EdgeSettings

log = structlog.get_logger("edge")


class EdgeService:
    def __init__(self, settings: EdgeSettings, bus: Bus, models: PersonalModels) -> None:
        self.settings = settings
        self.bus = bus
        self.models = models
        self._declared: set[str] = set()

    def start(self) -> None:
        self.bus.consume(topology.edge_queue(self.settings.server_id), self.on_batch)

    def on_batch(self, delivery: Delivery) -> None:
        batch = batch_from_proto(delivery.parse(hybrid_pb2.EdgeBatch))
        problems = list(batch_problems(batch, self.settings.server_id, self.models.users))
        if problems:
            raise Reject("invalid edge batch: " + "; ".join(problems))
        started = time.perf_counter()
        try:
            outcomes, handoffs = self._run(batch, started)
        except Exception as err:  # a model failure fails this batch's requests, not the worker
            log.exception("edge batch failed", batch=batch.batch_id)
            outcomes = [EdgeOutcome(m.task_id, OutcomeKind.FAILED, 0, error=repr(err)) for m in batch.members]
            handoffs = []
        for handoff in handoffs:
            self._send_handoff(handoff)
        edge_s = time.perf_counter() - started
        report = EdgeReport(batch.batch_id, batch.server_id, tuple(outcomes), edge_s, batch.adapter_user)
        self.bus.publish(topology.HYBRID.name, topology.EDGE_REPORT_KEY, edge_report_to_proto(report))
        log.info(
            "edge batch done",
            batch=batch.batch_id,
            size=len(batch.members),
            split=batch.split_step,
            adapter=batch.adapter_user,
            edge_s=round(edge_s, 3),
        )

    def _run(self, batch: EdgeBatch, started: float) -> tuple[list[EdgeOutcome], list[Handoff]]:
        phase = self.models.early_phase(batch)
        task_ids = [m.task_id for m in batch.members]
        if batch.finishes:
            images = self.models.store(phase, task_ids, self.settings.result_store, "edge")
            outcomes = [
                EdgeOutcome(t, OutcomeKind.FINISHED, batch.steps, image=i)
                for t, i in zip(task_ids, images, strict=True)
            ]
            return outcomes, []
        edge_s = time.perf_counter() - started
        handoffs = [
            Handoff(member, batch.steps, batch.split_step, latent, batch.server_id, edge_s)
            for member, latent in zip(batch.members, latents_of(phase), strict=True)
        ]
        outcomes = [EdgeOutcome(t, OutcomeKind.HANDED_OFF, batch.split_step) for t in task_ids]
        return outcomes, handoffs

    def _send_handoff(self, handoff: Handoff) -> None:
        user = handoff.member.user_id
        queue = topology.device_queue(user)
        if queue.name not in self._declared:  # the latent waits there for a device that is starting
            self.bus.declare(queue)
            self._declared.add(queue.name)
        message = handoff_to_proto(handoff)
        key = topology.device_key(user)
        self.bus.publish(topology.HYBRID.name, key, message, expiration_s=self.settings.handoff_ttl_s)
