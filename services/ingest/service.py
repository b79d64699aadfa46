"""The ingest service: decode, validate, deduplicate, admit.

A submission that cannot be decoded or fails validation is rejected to the client (TaskRejected naming
each offending field) and dead-lettered with the reason; a rejection goes to the shared events queue
when the reply_to is not a client reply queue. A valid one is published as TaskAccepted to the
aggregator, recorded as accepted, and acknowledged to the client. A resubmitted task_id is acknowledged
again (duplicate=True) and never admitted twice. Publishing before recording means a crash in between
re-admits the task on redelivery; the aggregator ignores task ids it already has.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog
from prometheus_client import Counter

from eat.v1 import common_pb2, tasks_pb2
from services.common.bus import Bus, Delivery, Reject
from services.common.convert import epoch_s, timestamp
from services.common.events import client_reply_to, publish_client_event
from services.common.sqlite import open_db
from services.common.topology import ACCEPTED_KEY, INGEST_QUEUE, TASKS
from services.ingest.settings import IngestSettings
from services.ingest.validation import FieldProblem, Limits, validate

log = structlog.get_logger("ingest")
SUBMISSIONS = Counter("eat_ingest_submissions_total", "Submissions by outcome", ["outcome"])


class AcceptedStore:
    """Task ids already admitted, on disk (so a restart still recognises duplicates)."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(
            path, "CREATE TABLE IF NOT EXISTS accepted (task_id TEXT PRIMARY KEY, accepted_at REAL)"
        )

    def accepted_at(self, task_id: str) -> float | None:
        row = self.db.execute("SELECT accepted_at FROM accepted WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else row[0]

    def add(self, task_id: str, accepted_at: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO accepted VALUES (?, ?)", (task_id, accepted_at))


class Ingest:
    def __init__(self, settings: IngestSettings, bus: Bus) -> None:
        self.bus = bus
        self.limits = Limits(
            models=settings.models,
            max_patches=settings.max_patches,
            min_steps=settings.min_steps,
            max_steps=settings.max_steps,
            max_prompt_chars=settings.max_prompt_chars,
            max_deadline_s=settings.max_deadline_s,
            nodes=settings.nodes,
            gang_sizes=settings.gang_sizes,
        )
        self.max_clock_skew_s = settings.max_clock_skew_s
        self.store = AcceptedStore(settings.state_dir / "ingest.sqlite3")
        bus.consume(INGEST_QUEUE, self.handle)

    def handle(self, delivery: Delivery) -> None:
        try:
            submission = delivery.parse(tasks_pb2.TaskSubmission)
        except Reject as err:
            SUBMISSIONS.labels("malformed").inc()
            self._reject("", [FieldProblem("", str(err))], delivery.reply_to, delivery.correlation_id)
            raise
        problems = validate(submission, self.limits)
        if problems:
            SUBMISSIONS.labels("invalid").inc()
            self._reject(submission.task_id, problems, submission.reply_to, submission.correlation_id)
            raise Reject("invalid submission: " + "; ".join(f"{p.field}: {p.reason}" for p in problems))
        previous = self.store.accepted_at(submission.task_id)
        if previous is not None:
            SUBMISSIONS.labels("duplicate").inc()
            self._acknowledge(submission, previous, duplicate=True)
            return
        accepted_at = time.time()
        accepted = self._accepted(submission, accepted_at, duplicate=False)
        self.bus.publish(TASKS.name, ACCEPTED_KEY, accepted, correlation_id=submission.correlation_id)
        self.store.add(submission.task_id, accepted_at)
        SUBMISSIONS.labels("accepted").inc()
        log.info("accepted", task_id=submission.task_id, model=submission.model, patches=submission.patches)
        publish_client_event(self.bus, "accepted", accepted, submission.reply_to, submission.correlation_id)

    def _accepted(
        self, submission: tasks_pb2.TaskSubmission, accepted_at: float, duplicate: bool
    ) -> tasks_pb2.TaskAccepted:
        filled = tasks_pb2.TaskSubmission()
        filled.CopyFrom(submission)
        filled.submitted_at.CopyFrom(timestamp(self._submitted_at(submission, accepted_at)))
        return tasks_pb2.TaskAccepted(
            task_id=submission.task_id,
            submission=filled,
            accepted_at=timestamp(accepted_at),
            duplicate=duplicate,
            correlation_id=submission.correlation_id,
        )

    def _submitted_at(self, submission: tasks_pb2.TaskSubmission, accepted_at: float) -> float:
        """The client's clock is not trusted: its submitted_at is clamped to [accepted_at - skew,
        accepted_at], our own acceptance time bounding it (not the broker's, which stamps no time). An
        honest client's time in the submissions queue is kept up to the skew; a clock far off can no
        longer make response times negative or huge, nor move the deadline it is the origin of."""
        if not submission.HasField("submitted_at"):
            return accepted_at
        claimed = epoch_s(submission.submitted_at)
        return min(max(claimed, accepted_at - self.max_clock_skew_s), accepted_at)

    def _acknowledge(self, submission: tasks_pb2.TaskSubmission, accepted_at: float, duplicate: bool) -> None:
        accepted = self._accepted(submission, accepted_at, duplicate)
        publish_client_event(self.bus, "accepted", accepted, submission.reply_to, submission.correlation_id)

    def _reject(self, task_id: str, problems: list[FieldProblem], reply_to: str, correlation_id: str) -> None:
        rejected = tasks_pb2.TaskRejected(
            task_id=task_id,
            errors=[common_pb2.FieldError(field=p.field, reason=p.reason) for p in problems],
            rejected_at=timestamp(),
            correlation_id=correlation_id,
        )
        log.info("rejected", task_id=task_id, errors=[f"{p.field}: {p.reason}" for p in problems])
        publish_client_event(self.bus, "rejected", rejected, client_reply_to(reply_to), correlation_id)
