"""The aggregator's I/O shell: RabbitMQ in and out, the policy over gRPC, the journal on disk.

Per message: decode -> core -> publish the core's effects -> journal the changed records -> ack (the
bus acks when the handler returns). A crash before the ack redelivers the message; the core ignores
what it has already seen. Decisions run once per loop turn after a change that could start a task (a
task queued, a server freed) or when a wait's recheck timer expires; the policy server is asked over
gRPC, and the local fallback policy decides while it is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from prometheus_client import Counter, Gauge, Histogram

from eat.v1 import executor_pb2, learning_pb2, quality_pb2, tasks_pb2
from policy_models.live import Decision, LiveScheduler, Snapshot
from policy_models.obs import OBS_SPEC_VERSION
from services.aggregator import messages
from services.aggregator.core import (
    AggregatorCore,
    DispatchGang,
    Effect,
    TaskDone,
    TaskFailedOut,
    Transition,
)
from services.aggregator.journal import Journal
from services.common import convert
from services.common.bus import Bus, Delivery, Reject
from services.common.convert import epoch_s, snapshot_to_proto, task_from_submission, timestamp
from services.common.domain import QualityResult
from services.common.events import (
    CLIENT_REPLY_QUEUE_TEXT,
    client_reply_to,
    is_client_reply_queue,
    publish_client_event,
)
from services.common.topology import (
    AGGREGATOR_EXECUTORS,
    AGGREGATOR_QUALITY,
    AGGREGATOR_RESULTS,
    AGGREGATOR_TASKS,
    DISPATCH,
    EVENTS,
    EXPERIENCE_KEY,
    LEARNING,
    SNAPSHOT_KEY,
    dispatch_key,
)
from services.policy_server.client import PolicyClient, PolicyUnavailable

log = structlog.get_logger("aggregator")
DECISIONS = Counter(
    "eat_aggregator_decisions_total", "Decisions by source and outcome", ["source", "outcome"]
)
FALLBACKS = Counter("eat_aggregator_policy_fallback_total", "Decisions made by the local fallback policy")
TERMINALS = Counter("eat_aggregator_terminal_total", "Tasks ended, by outcome", ["outcome"])
GUARDED = Counter(
    "eat_aggregator_starvation_overrides_total",
    "Waits overridden by the fallback because a startable task had waited past the starvation limit",
)
QUEUE_LENGTH = Gauge("eat_aggregator_queue_length", "Tasks waiting to be scheduled")
DECIDE_SECONDS = Histogram(
    "eat_aggregator_decide_seconds",
    "Wall time of one decision (policy call included)",
    buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
)
TICK_S = 0.1


class Aggregator:
    def __init__(
        self,
        core: AggregatorCore,
        bus: Bus,
        journal: Journal,
        fallback: LiveScheduler,
        policy: PolicyClient | None,
        *,
        recheck_wall_s: float,
        rendezvous_timeout_s: float = 30.0,
        starvation_s: float = float("inf"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core, self.bus, self.journal = core, bus, journal
        self.fallback, self.policy = fallback, policy
        self.recheck_wall_s, self.clock = recheck_wall_s, clock
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self.starvation_s = starvation_s
        self.early_quality: dict[tuple[str, int], QualityResult] = {}
        self.episode_id = f"live-{int(clock())}"
        self.policy_down = False
        self.decide_scheduled = False
        self.last_signature: tuple[int, frozenset[str]] | None = None
        self.next_recheck = 0.0
        for record in journal.unfinished():
            core.restore(record)
        bus.consume(AGGREGATOR_TASKS, self.on_accepted)
        bus.consume(AGGREGATOR_EXECUTORS, self.on_executor)
        bus.consume(AGGREGATOR_RESULTS, self.on_result)
        bus.consume(AGGREGATOR_QUALITY, self.on_quality)
        bus.every(TICK_S, self.on_tick)
        bus.every(1.0, self.publish_snapshot)

    # ----- handlers --------------------------------------------------------------------------------
    def on_accepted(self, delivery: Delivery) -> None:
        accepted = delivery.parse(tasks_pb2.TaskAccepted)
        if not accepted.task_id or accepted.task_id != accepted.submission.task_id:
            raise Reject("TaskAccepted without a matching submission.task_id")
        reply_to = accepted.submission.reply_to
        if reply_to and not is_client_reply_queue(reply_to):
            # Its events would go into whatever queue it names: an internal one, perhaps.
            raise Reject(f"submission.reply_to: must be {CLIENT_REPLY_QUEUE_TEXT}, got {reply_to[:64]!r}")
        task = task_from_submission(accepted.submission, epoch_s(accepted.accepted_at) or self.clock())
        if self.journal.known(task.task_id) and task.task_id not in self.core.tasks:
            return  # ended before a restart: a redelivered duplicate
        if self.core.accept(task, self.clock()):
            log.info("queued", task_id=task.task_id, patches=task.patches, model=task.model)
        self._settle()

    def on_executor(self, delivery: Delivery) -> None:
        if delivery.type_name == executor_pb2.ExecutorHeartbeat.DESCRIPTOR.full_name:
            report = convert.heartbeat(delivery.parse(executor_pb2.ExecutorHeartbeat))
        else:
            report = convert.executor_status(delivery.parse(executor_pb2.ExecutorStatus))
        self.core.executor_report(report, self.clock())
        self._settle()

    def on_result(self, delivery: Delivery) -> None:
        result = convert.attempt_result(delivery.parse(executor_pb2.TaskResult))
        self.core.attempt_result(result, self.clock())
        early = self.early_quality.pop((result.task_id, result.attempt), None)
        if early is not None:
            self.core.quality(early, self.clock())
        self._settle()

    def on_quality(self, delivery: Delivery) -> None:
        report = convert.quality(delivery.parse(quality_pb2.QualityReport))
        if not self.core.quality(report, self.clock()):
            # The evaluator was faster than our results queue: use it when the result arrives.
            self.early_quality[report.task_id, report.attempt] = report
        self._settle()

    def on_tick(self) -> None:
        self.core.tick(self.clock())
        self._settle()
        if self.clock() >= self.next_recheck and self.core.needs_decision():
            self._schedule_decide()

    # ----- after each input ------------------------------------------------------------------------
    def _settle(self) -> None:
        """Publish what the core decided, journal what changed, and wake the decision loop when a
        task could now start that could not before."""
        self._flush()
        signature = (
            len(self.core.queue),
            frozenset(e for e, r in self.core.executors.items() if r.schedulable),
        )
        if signature != self.last_signature and self.core.needs_decision():
            self._schedule_decide()
        self.last_signature = signature
        QUEUE_LENGTH.set(len(self.core.queue))

    def _schedule_decide(self) -> None:
        if not self.decide_scheduled:
            self.decide_scheduled = True
            self.bus.call_later(0.0, self.decide)

    def _flush(self) -> None:
        while effects := self.core.take_effects():
            for effect in effects:
                self._publish(effect)
        self.journal.save(list(self.core.take_dirty()))

    # ----- decisions -------------------------------------------------------------------------------
    def decide(self) -> None:
        """Launch tasks while the policy says so and servers are free; after a wait, ask again at the
        next change or after the recheck interval."""
        self.decide_scheduled = False
        while self.core.needs_decision():
            started = time.perf_counter()
            now = self.clock()
            snapshot = self.core.snapshot(now)
            decision, version = self._ask(snapshot)
            launched = self.core.apply(snapshot, decision, version, now)
            DECIDE_SECONDS.observe(time.perf_counter() - started)
            self._flush()
            if not launched:
                self.next_recheck = now + self.recheck_wall_s
                break
        self.last_signature = None  # re-arm on the next change

    def _ask(self, snapshot: Snapshot) -> tuple[Decision, int]:
        decision, version = self._ask_policy(snapshot)
        if not decision.execute and starving(snapshot, self.starvation_s):
            GUARDED.inc()
            return self.fallback.decide(snapshot), 0
        return decision, version

    def _ask_policy(self, snapshot: Snapshot) -> tuple[Decision, int]:
        if self.policy is not None:
            try:
                reply = self.policy.decide(snapshot)
            except PolicyUnavailable as err:
                if not self.policy_down:
                    log.warning("policy server unreachable; deciding with the fallback", error=str(err))
                self.policy_down = True
            else:
                if self.policy_down:
                    log.info("policy server is back", version=reply.version, policy=reply.policy_name)
                self.policy_down = False
                if reply.decision.execute and not self.core.steps_allowed(reply.decision.steps):
                    # The core would refuse it; the fallback decides this turn so the task still starts.
                    DECISIONS.labels("remote", "refused").inc()
                    log.warning("refused a decision outside the step range", steps=reply.decision.steps)
                else:
                    DECISIONS.labels("remote", "execute" if reply.decision.execute else "wait").inc()
                    return reply.decision, reply.version
        FALLBACKS.inc()
        decision = self.fallback.decide(snapshot)
        DECISIONS.labels("fallback", "execute" if decision.execute else "wait").inc()
        return decision, 0

    # ----- effects ---------------------------------------------------------------------------------
    def _publish(self, effect: Effect) -> None:
        if isinstance(effect, DispatchGang):
            self._dispatch(effect)
        elif isinstance(effect, TaskDone):
            self._completed(effect)
        elif isinstance(effect, TaskFailedOut):
            self._failed(effect)
        elif isinstance(effect, Transition):
            self._experience(effect)

    def _dispatch(self, effect: DispatchGang) -> None:
        record = effect.record
        task = record.task
        log.info(
            "dispatch",
            task_id=task.task_id,
            attempt=record.attempt,
            gang=list(effect.placement.server_ids),
            steps=record.steps,
            reuse=effect.placement.reused,
        )
        for rank, member in enumerate(effect.placement.server_ids):
            message = messages.gang_dispatch(effect, rank, self.clock(), self.rendezvous_timeout_s)
            self.bus.publish(
                DISPATCH.name,
                dispatch_key(member),
                message,
                mandatory=True,
                on_unroutable=lambda member=member: self._unroutable(member),
            )

    def _unroutable(self, executor_id: str) -> None:
        """No queue for that executor (never started, or deleted): it is gone; its attempt is retried."""
        self.core.executor_unreachable(executor_id, self.clock())
        self._settle()

    def _completed(self, effect: TaskDone) -> None:
        record = effect.record
        TERMINALS.labels("completed").inc()
        log.info(
            "completed",
            task_id=record.task.task_id,
            attempts=record.attempt,
            quality=round(effect.quality, 4),
            response_s=round(effect.response_s, 3),
        )
        message = messages.task_completed(effect, self.clock())
        reply_to = client_reply_to(record.task.reply_to)  # tasks journaled before reply_to was checked
        publish_client_event(self.bus, "completed", message, reply_to, record.task.correlation_id)

    def _failed(self, effect: TaskFailedOut) -> None:
        record = effect.record
        TERMINALS.labels("failed").inc()
        log.warning("failed", task_id=record.task.task_id, reason=effect.reason.name, message=effect.message)
        message = messages.task_failed(effect, self.clock())
        reply_to = client_reply_to(record.task.reply_to)
        publish_client_event(self.bus, "failed", message, reply_to, record.task.correlation_id)

    def _experience(self, t: Transition) -> None:
        message = learning_pb2.Experience(
            episode_id=self.episode_id,
            step_index=t.step_index,
            observation=snapshot_to_proto(t.observation),
            action=t.action,
            reward=t.reward,
            next_observation=snapshot_to_proto(t.next_observation),
            policy_version=t.policy_version,
            obs_spec_version=OBS_SPEC_VERSION,
            executed=t.executed,
            task_id=t.task_id,
            steps=t.steps,
            source="live",
            created_at=timestamp(self.clock()),
        )
        self.bus.publish(LEARNING.name, EXPERIENCE_KEY, message)

    def publish_snapshot(self) -> None:
        """The state `eat status` shows: the snapshot, with task counts in the headers."""
        snapshot = snapshot_to_proto(self.core.snapshot(self.clock()), taken_at=self.clock())
        headers = {f"x-eat-{state}": count for state, count in self.core.counts().items()}
        self.bus.publish(EVENTS.name, SNAPSHOT_KEY, snapshot, headers=headers, persistent=False)


def starving(snapshot: Snapshot, limit_s: float) -> bool:
    """A visible task that could start now (enough idle servers) has waited at least `limit_s`."""
    idle = sum(s.idle for s in snapshot.servers)
    return any(t.waiting_s >= limit_s and t.patches <= idle for t in snapshot.queue)
