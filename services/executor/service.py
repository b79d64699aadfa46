"""The executor's bus wiring: consume its dispatch queue, run attempts through a `Runner`, publish
results, statuses and heartbeats. Everything here runs on the bus thread (pika is not thread-safe).

Acks: a dispatch is acked as soon as it is handled (accepted or refused with a failed result); the
aggregator owns retries and notices a dead executor by its missing heartbeats.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import structlog

from eat.v1 import executor_pb2
from services.common import topology
from services.common.bus import CONNECTION_ERRORS, Bus, Delivery
from services.common.convert import (
    dispatch_from_proto,
    executor_status_to_proto,
    heartbeat_to_proto,
    task_result_to_proto,
)
from services.executor import metrics
from services.executor.core import (
    AttemptFailed,
    AttemptResult,
    Dispatch,
    ExecutorCore,
    Failure,
    RunReport,
    Verdict,
    failed_result,
    queue_wait_s,
    success_result,
    timing_record,
)
from services.executor.runners import DoneCallback, Runner, build_runner
from services.executor.settings import ExecutorSettings

log = structlog.get_logger("executor")


def utc_now() -> datetime:
    return datetime.now(UTC)


class ExecutorService:
    """One executor process: call `start()` before `bus.run()`; `request_shutdown()` from anywhere."""

    def __init__(
        self,
        settings: ExecutorSettings,
        bus: Bus,
        runner: Runner | None = None,
        *,
        incarnation: str | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        if runner is None:
            runner = build_runner(settings, bus.call_later, bus.call_threadsafe)
        self.runner = runner
        self.core = ExecutorCore(settings.executor_id, settings.models, incarnation or uuid.uuid4().hex)
        self.queue = topology.executor_queue(settings.executor_id)
        self.timings_path = settings.state_dir / f"executor-{settings.executor_id}-timings.jsonl"
        self._shutdown_requested = False

    def start(self) -> None:
        """Register the consumer and timers; the first status goes out once the bus is connected."""
        self.bus.consume(self.queue, self.on_dispatch)
        self.bus.every(self.settings.heartbeat_s, self.publish_heartbeat)
        self.bus.every(self.settings.status_s, self.publish_status)
        self.bus.call_later(0.0, self.publish_status)

    # ----- dispatches ------------------------------------------------------------------------------
    def on_dispatch(self, delivery: Delivery) -> None:
        dispatch = dispatch_from_proto(delivery.parse(executor_pb2.GangDispatch))
        with structlog.contextvars.bound_contextvars(task_id=dispatch.task_id, attempt=dispatch.attempt):
            self.handle(dispatch)

    def handle(self, dispatch: Dispatch) -> None:
        started_at = utc_now()
        admission = self.core.admit(dispatch, started_at)
        if admission.verdict is Verdict.IGNORE:
            log.info("ignoring a redelivered dispatch of an attempt already taken")
            return
        if admission.failure is not None:
            self._refuse(dispatch, admission.failure)
            return
        try:
            expected_s = self.runner.start(dispatch, self._done_callback(dispatch, started_at))
        except AttemptFailed as err:
            self._refuse(dispatch, err.failure)
            return
        self.core.begin(dispatch, expected_s, time.monotonic())
        metrics.BUSY.set(1)
        log.info("attempt started", k=dispatch.gang_size, rank=dispatch.rank, expected_s=round(expected_s, 3))
        # The aggregator already counts this executor busy from its dispatch; a BUSY status adds the
        # remaining time, which is worth a message only if the attempt lasts (at maximum simulation
        # speed these statuses would be a third of all executor traffic).
        if expected_s / self.settings.time_scale >= self.settings.busy_status_min_s:
            self.publish_status()

    def _refuse(self, dispatch: Dispatch, failure: Failure) -> None:
        log.warning("refusing an attempt", reason=failure.code.value, error=failure.message)
        metrics.ATTEMPTS.labels("refused", failure.code.value).inc()
        self._publish_result(failed_result(dispatch, failure, utc_now()))

    def _done_callback(self, dispatch: Dispatch, started_at: datetime) -> DoneCallback:
        def done(outcome: RunReport | Failure) -> None:
            self._on_done(dispatch, started_at, outcome)

        return done

    def _on_done(self, dispatch: Dispatch, started_at: datetime, outcome: RunReport | Failure) -> None:
        """Conclude the attempt, then publish from separate timers: the bus retries a timer whose
        publish lost the connection, and state must not change twice."""
        finished_at = utc_now()
        if isinstance(outcome, Failure):
            result = failed_result(dispatch, outcome, finished_at)
            metrics.ATTEMPTS.labels("failed", outcome.code.value).inc()
        else:
            wait_s = queue_wait_s(dispatch.dispatched_at, started_at, self.settings.time_scale)
            result = success_result(dispatch, outcome, wait_s, finished_at)
            self._record_timings(dispatch, result)
            self._count_success(outcome)
        self.core.finish(dispatch)
        metrics.BUSY.set(0)
        log.info(
            "attempt finished",
            task_id=dispatch.task_id,
            attempt=dispatch.attempt,
            success=result.success,
            total_s=round(result.timings.total_s, 3),
        )
        # Only rank 0 reports a success for the gang; any member reports an attempt it could not run.
        if dispatch.rank == 0 or not result.success:
            self.bus.call_later(0.0, lambda: self._publish_result(result))
        self.bus.call_later(0.0, self.publish_status)

    def _count_success(self, report: RunReport) -> None:
        metrics.ATTEMPTS.labels("succeeded", "").inc()
        metrics.ATTEMPT_SECONDS.observe(report.timings.total_s)
        if not report.model_reused:
            metrics.MODEL_LOADS.inc()

    def _record_timings(self, dispatch: Dispatch, result: AttemptResult) -> None:
        try:
            self.timings_path.parent.mkdir(parents=True, exist_ok=True)
            with self.timings_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(timing_record(dispatch, result)) + "\n")
        except OSError as err:  # calibration data is nice to have; never fail an attempt over it
            log.warning("cannot record timings", path=str(self.timings_path), error=repr(err))

    # ----- publishing ------------------------------------------------------------------------------
    def _publish_result(self, result: AttemptResult) -> None:
        self.bus.publish(
            topology.RESULTS.name, topology.result_key(result.task_id), task_result_to_proto(result)
        )

    def publish_status(self) -> None:
        snapshot = self.core.snapshot(
            resident_models=self.runner.resident_models(),
            max_resident_models=self.settings.max_resident_models,
            speed_factor=self.settings.speed_factor,
            device=self.settings.device,
            host=self.settings.host,
            time_scale=self.settings.time_scale,
            now_wall_s=time.monotonic(),
            reported_at=utc_now(),
        )
        key = topology.status_key(self.settings.executor_id)
        self.bus.publish(topology.EXECUTORS.name, key, executor_status_to_proto(snapshot), persistent=False)

    def publish_heartbeat(self) -> None:
        heartbeat = heartbeat_to_proto(
            self.settings.executor_id, self.core.next_sequence(), self.core.incarnation, utc_now()
        )
        key = topology.heartbeat_key(self.settings.executor_id)
        self.bus.publish(topology.EXECUTORS.name, key, heartbeat, persistent=False)

    # ----- shutdown --------------------------------------------------------------------------------
    def request_shutdown(self) -> None:
        """Drain and stop (safe from a signal handler or another thread). A second request stops at
        once, so a second Ctrl-C exits even while the broker is unreachable."""
        if self._shutdown_requested:
            self.bus.stop()
            return
        self._shutdown_requested = True
        self.bus.call_threadsafe(self._drain)

    def _drain(self) -> None:
        # A running attempt is abandoned: its timer never fires once the loop stops, no result is
        # published, and the aggregator retries the task elsewhere when this executor's heartbeats stop.
        self.core.drain()
        try:
            self.publish_status()
        except CONNECTION_ERRORS as err:
            log.warning("could not publish the draining status", error=repr(err))
        finally:
            self.bus.stop()
        log.info("draining: stopped consuming", abandoned=self.core.running is not None)
