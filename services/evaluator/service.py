"""The evaluator's bus wiring: consume TaskResults, publish QualityReports, batch real images.

Simulated results are answered inside the handler, so their delivery is acked only after the report
is confirmed. Real images wait up to `batch_window_s` (or until `batch_size` are waiting) and are
scored from a bus timer; their deliveries are held (`Bus.hold`) until their reports are confirmed, so a
crash inside the batching window loses nothing: the broker redelivers the held results.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from typing import Protocol

import structlog

from eat.v1 import executor_pb2
from services.common import topology
from services.common.bus import CONNECTION_ERRORS, Bus, Delivery, Hold
from services.common.convert import eval_request_from_proto, quality_report_to_proto
from services.common.topology import Queue
from services.evaluator import metrics
from services.evaluator.core import (
    EvalRequest,
    QualityOutcome,
    Route,
    Scorer,
    evaluate_batch,
    pass_through,
    route,
    score_records,
)
from services.evaluator.settings import EvaluatorSettings

log = structlog.get_logger("evaluator")

# One JSON line per scored real image, in the state dir: `eat calibrate` fits quality vs steps to them.
SCORES_FILE = "evaluator-scores.jsonl"


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class EvaluatorService:
    """Call `start()` before `bus.run()`; `request_shutdown()` from anywhere."""

    def __init__(
        self,
        settings: EvaluatorSettings,
        bus: Bus,
        scorer: Scorer,
        *,
        queue: Queue = topology.EVALUATOR_RESULTS,  # tests consume a private queue instead
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.scorer = scorer
        self.queue = queue
        self._pending: list[EvalRequest] = []
        self._holds: dict[tuple[str, int], Hold] = {}  # deliveries acked once their report is confirmed
        self._unsent: deque[QualityOutcome] = deque()  # scored, not yet confirmed by the broker
        self._flush_timer: Cancellable | None = None
        self._shutdown_requested = False
        self.scores_path = settings.state_dir / SCORES_FILE

    def start(self) -> None:
        self.bus.consume(self.queue, self.on_result)

    def on_result(self, delivery: Delivery) -> None:
        message = delivery.parse(executor_pb2.TaskResult)
        request = eval_request_from_proto(message)
        kind = route(request)
        if kind is Route.IGNORE:
            metrics.IGNORED.inc()
            return
        if kind is Route.PASS_THROUGH:
            self._publish(pass_through(request, datetime.now(UTC)))
            return
        self._pending.append(request)
        self._holds[request.task_id, request.attempt] = self.bus.hold()
        if len(self._pending) >= self.settings.batch_size:
            self._schedule_flush(0.0)  # scored from a timer, so a lost publish never replays this handler
        elif self._flush_timer is None:
            self._schedule_flush(self.settings.batch_window_s)

    def _schedule_flush(self, delay_s: float) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_timer = self.bus.call_later(delay_s, self.flush)

    def flush(self) -> None:
        """Score one batch and publish its reports. Safe to rerun after a lost connection: reports
        already scored are published, not scored again."""
        self._flush_timer = None
        if not self._unsent and self._pending:
            batch = self._pending[: self.settings.batch_size]
            del self._pending[: self.settings.batch_size]
            outcomes = evaluate_batch(self.scorer, batch, self.settings.result_store)
            self._record_scores(batch, outcomes)
            self._unsent.extend(outcomes)
            metrics.BATCH_SIZE.observe(len(batch))
            log.info("scored a batch", images=len(batch))
        while self._unsent:
            outcome = self._unsent[0]
            hold = self._holds.pop((outcome.task_id, outcome.attempt), None)
            self._publish(outcome, hold)
            if hold is not None:
                self.bus.release(hold)
            self._unsent.popleft()
        if self._pending:
            self._schedule_flush(0.0)

    def _record_scores(self, batch: list[EvalRequest], outcomes: list[QualityOutcome]) -> None:
        """Append the batch's score lines; a full disk costs calibration data, never a report."""
        lines = score_records(batch, outcomes)
        if not lines:
            return
        try:
            self.scores_path.parent.mkdir(parents=True, exist_ok=True)
            with self.scores_path.open("a", encoding="utf-8") as out:
                out.writelines(json.dumps(line) + "\n" for line in lines)
        except OSError as err:
            log.warning("cannot record scores", path=str(self.scores_path), error=repr(err))

    def _publish(self, outcome: QualityOutcome, hold: Hold | None = None) -> None:
        key = topology.quality_key(outcome.task_id)
        self.bus.publish(topology.QUALITY.name, key, quality_report_to_proto(outcome), on_behalf=hold)
        if outcome.error:
            metrics.REPORTS.labels("error").inc()
            log.warning("could not score an image", task_id=outcome.task_id, error=outcome.error)
        elif outcome.simulated:
            metrics.REPORTS.labels("simulated").inc()
        else:
            metrics.REPORTS.labels("scored").inc()
            metrics.EVAL_SECONDS.observe(outcome.eval_s)

    # ----- shutdown --------------------------------------------------------------------------------
    def request_shutdown(self) -> None:
        """Flush waiting images, then stop (safe from a signal handler); a second request stops at once."""
        if self._shutdown_requested:
            self.bus.stop()
            return
        self._shutdown_requested = True
        self.bus.call_threadsafe(self._finish)

    def _finish(self) -> None:
        try:
            while self._pending or self._unsent:
                self.flush()
        except CONNECTION_ERRORS as err:
            log.warning("lost the broker while flushing; reports not sent", error=repr(err))
        finally:
            self.bus.stop()
