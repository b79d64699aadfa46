"""The aggregator's pure core: task lifecycle, cluster state and what to do next. No I/O.

Every input (a task accepted, an executor report, an attempt result, a quality report, a clock tick, a
decision) is a method call with the wall time passed in; every output is an effect in `self.outbox`
(dispatch a gang, complete or fail a task, emit an experience transition) that the I/O shell publishes.
Records that changed are listed in `self.dirty` for the shell's journal.

Task states: queued -> running (dispatched) -> evaluating (image made, waiting for its quality) ->
completed; or failed from any of them. A failed attempt goes back to the front of the queue with the
next attempt number until `max_attempts`; each accepted task ends in exactly one terminal effect.

Clocks: wall seconds (time.time()) for lifecycle; "model seconds" = wall seconds * time_scale for what
the policy sees (sim executors run time_scale times faster than the timing profile).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from policy_models.config import RewardConfig
from policy_models.live import Decision, Placement, ServerInfo, Snapshot, TaskInfo, select_servers
from policy_models.profiles import REFERENCE, TimingProfile
from policy_models.reward import launch_reward
from services.common.domain import (
    AttemptResult,
    ExecState,
    ExecutorReport,
    QualityResult,
    Reason,
    Task,
)

# Attempt failures that another gang cannot fix.
FINAL_REASONS = frozenset({Reason.DEADLINE_EXCEEDED, Reason.CANCELLED})
ATTEMPT_BOUND_FACTOR = 10.0  # headroom over the profile's slowest attempt (slow servers, loaded hosts)


def attempt_bound_s(profile: TimingProfile, max_steps: int, factor: float = ATTEMPT_BOUND_FACTOR) -> float:
    """The longest an attempt can honestly take, in model seconds: the slowest cold load plus
    `max_steps` of the slowest step the profile knows, times `factor`. Any longer time an executor
    claims (remaining, load, run) is capped to it, so a forged report cannot keep a server looking busy
    for years nor push a reward out of its range."""
    return factor * (max(profile.init_s.values()) + max_steps * max(profile.step_s.values()))


def bounded_s(claimed: float, bound: float) -> float:
    """A claimed duration in [0, bound]; a non-finite one counts as the bound."""
    return min(max(claimed, 0.0), bound) if math.isfinite(claimed) else bound


@dataclass
class ExecutorRecord:
    executor_id: str
    incarnation: str
    sequence: int
    last_seen: float
    state: ExecState = ExecState.IDLE
    current_task_id: str = ""
    remaining_s: float = 0.0
    resident_models: tuple[str, ...] = ()
    max_resident_models: int = 0
    speed: float = 1.0
    host: str = ""
    assigned: tuple[str, int] | None = None  # (task_id, attempt) dispatched here and not yet resolved
    # Held off after its gang refused an attempt as busy: until it reports again (a status newer than
    # `held_after`) or until `held_until` (wall), so a stale idle view cannot send it work at once.
    held_until: float | None = None
    held_after: int = 0

    @property
    def alive(self) -> bool:
        return self.state is not ExecState.DOWN

    @property
    def schedulable(self) -> bool:
        return self.state is ExecState.IDLE and self.assigned is None and self.held_until is None


@dataclass
class TaskRecord:
    task: Task
    state: str = "queued"  # queued | running | evaluating | completed | failed
    attempt: int = 0  # the current (or last) attempt number; 0 before the first dispatch
    gang: tuple[str, ...] = ()
    steps: int = 0
    seed: int = 0
    group_id: int = 0
    dispatched_at: float = 0.0
    policy_version: int = 0
    launch_wait_s: float = 0.0  # model seconds waited when launched
    launch_queue_wait_s: float = 0.0  # mean model-second wait of the visible queue after the launch
    transition: int = -1  # experience step index of the launch decision (-1 = none)
    result: AttemptResult | None = None
    last_error: str = ""
    orphan_since: float | None = None  # wall time since when no gang member shows the task
    busy_refusals: int = 0  # attempts a gang member refused as busy: they never ran, so do not count

    @property
    def terminal(self) -> bool:
        return self.state in ("completed", "failed")


# ----- effects -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DispatchGang:
    record: TaskRecord
    placement: Placement
    hosts: tuple[str, ...]
    rendezvous_port: int
    deadline_at: float | None


@dataclass(frozen=True)
class TaskDone:
    record: TaskRecord
    quality: float
    simulated: bool
    response_s: float  # model seconds, submitted to completion
    wait_s: float  # model seconds, accepted to the successful attempt's dispatch


@dataclass(frozen=True)
class TaskFailedOut:
    record: TaskRecord
    reason: Reason
    message: str


@dataclass(frozen=True)
class Transition:
    """An experience transition (s, a, r, s') ready for the trainer."""

    step_index: int
    observation: Snapshot
    action: tuple[float, ...]
    reward: float
    next_observation: Snapshot
    executed: bool
    task_id: str
    steps: int
    policy_version: int


Effect = DispatchGang | TaskDone | TaskFailedOut | Transition


@dataclass
class _Pending:
    observation: Snapshot
    decision: Decision
    policy_version: int
    next_observation: Snapshot | None = None
    reward: float | None = None


@dataclass(frozen=True)
class CoreConfig:
    nodes: int = 4
    visible_queue: int = 10
    models_per_server: int = 2
    time_scale: float = 1.0
    heartbeat_timeout_s: float = 3.0
    orphan_grace_s: float = 5.0
    no_capacity_after_s: float = 30.0
    max_attempts: int = 3
    busy_hold_s: float = 2.0  # wall seconds at most a gang that refused as busy is held off
    max_busy_refusals: int = 100  # then a busy refusal counts as a failed attempt after all
    rendezvous_port_base: int = 29500
    rendezvous_port_span: int = 100
    episode_tasks: int = 32
    episode_time_s: float = 1024.0
    reward: RewardConfig = field(default_factory=RewardConfig)
    min_steps: int = 1  # the system's step range: a decision outside it is refused
    max_steps: int = 32
    # Longest time (model seconds) an executor may claim for an attempt; see attempt_bound_s.
    max_attempt_s: float = attempt_bound_s(REFERENCE, 32)


class AggregatorCore:
    """Queue, cluster and lifecycle state; see the module docstring."""

    def __init__(self, config: CoreConfig) -> None:
        self.cfg = config
        self.tasks: dict[str, TaskRecord] = {}
        self.queue: deque[str] = deque()
        self.executors: dict[str, ExecutorRecord] = {}
        self.outbox: list[Effect] = []
        self.dirty: set[str] = set()
        self.ended: Counter[str] = Counter()  # tasks completed / failed (and gone from self.tasks)
        self.group_counter = 0
        self.step_counter = 0
        self.pending: dict[int, _Pending] = {}
        self.last_transition: int | None = None
        self.episode_start = 0.0
        self.episode_arrived = 0
        self.episode_launched = 0

    # ----- inputs: tasks ---------------------------------------------------------------------------
    def accept(self, task: Task, now: float) -> bool:
        """Queue a newly accepted task; False (and nothing changes) for a task id already known."""
        if task.task_id in self.tasks:
            return False
        self._roll_episode(now)
        self.episode_arrived += 1
        record = TaskRecord(task=task, seed=task.seed if task.seed is not None else _seed_of(task.task_id))
        self.tasks[task.task_id] = record
        self.queue.append(task.task_id)
        self.dirty.add(task.task_id)
        return True

    def restore(self, record: TaskRecord) -> None:
        """Reload a journaled record after a restart (running gangs are re-reserved)."""
        self.tasks[record.task.task_id] = record
        if record.state == "queued":
            self.queue.append(record.task.task_id)
        elif record.state == "running":
            for member in record.gang:
                executor = self.executors.get(member)
                if executor is not None:
                    executor.assigned = (record.task.task_id, record.attempt)
        self.group_counter = max(self.group_counter, record.group_id)

    # ----- inputs: executors -----------------------------------------------------------------------
    def executor_report(self, report: ExecutorReport, now: float) -> None:
        record = self.executors.get(report.executor_id)
        if record is None or record.incarnation != report.incarnation:
            if record is not None:
                self._executor_lost(record, now, f"executor {record.executor_id} restarted")
            record = ExecutorRecord(report.executor_id, report.incarnation, report.sequence, now)
            self.executors[report.executor_id] = record
            self._reassign_restored(record)
        elif report.sequence <= record.sequence and record.alive:
            return  # older than what we know
        # A report is as fresh as its send time: statuses left in the queue by an executor that has
        # since gone away must not make it look alive.
        record.sequence, record.last_seen = report.sequence, min(now, report.sent_at or now)
        if now - record.last_seen > self.cfg.heartbeat_timeout_s:
            record.state = ExecState.DOWN
            return
        if report.heartbeat_only:
            if record.state is ExecState.DOWN:
                record.state = ExecState.BUSY  # alive again; its next status says what it does
            return
        if record.held_until is not None and report.sequence > record.held_after:
            record.held_until = None  # it has told us what it does since the refusal
        record.state = report.state
        record.current_task_id = report.current_task_id
        record.remaining_s = bounded_s(report.remaining_s, self.cfg.max_attempt_s)
        record.resident_models = report.resident_models
        record.max_resident_models = report.max_resident_models
        record.speed = report.speed or 1.0
        record.host = report.host

    def _reassign_restored(self, executor: ExecutorRecord) -> None:
        for record in self.tasks.values():
            if record.state == "running" and executor.executor_id in record.gang:
                executor.assigned = (record.task.task_id, record.attempt)

    def executor_unreachable(self, executor_id: str, now: float) -> None:
        """A dispatch to it found no queue: it is gone; its attempt fails and is retried elsewhere."""
        executor = self.executors.get(executor_id)
        if executor is not None:
            self._executor_lost(executor, now, f"no dispatch queue for executor {executor_id}")

    def _executor_lost(self, executor: ExecutorRecord, now: float, why: str) -> None:
        executor.state = ExecState.DOWN
        if executor.assigned is not None:
            task_id, attempt = executor.assigned
            self._attempt_failed(task_id, attempt, Reason.GANG_MEMBER_LOST, why, now)

    # ----- inputs: results -------------------------------------------------------------------------
    def attempt_result(self, result: AttemptResult, now: float) -> None:
        record = self.tasks.get(result.task_id)
        if record is None or record.state != "running" or record.attempt != result.attempt:
            return  # a stale attempt (already retried, failed or done)
        if not result.success:
            reason = result.reason or Reason.EXECUTOR_ERROR
            self._attempt_failed(result.task_id, result.attempt, reason, result.message, now)
            return
        self._release_gang(record)
        bound = self.cfg.max_attempt_s
        result = dataclasses.replace(
            result, init_s=bounded_s(result.init_s, bound), run_s=bounded_s(result.run_s, bound)
        )
        record.state, record.result, record.orphan_since = "evaluating", result, None
        self.dirty.add(record.task.task_id)

    def quality(self, report: QualityResult, now: float) -> bool:
        """Finish a task with its quality. False when the report cannot be used yet (its attempt's
        result has not arrived): the shell keeps it and offers it again."""
        record = self.tasks.get(report.task_id)
        if record is None or record.terminal or record.attempt != report.attempt:
            return True  # stale or duplicate: nothing to do
        if record.state != "evaluating":
            return False
        if report.error:
            self._fail(record, Reason.EVALUATION_FAILED, f"evaluation failed: {report.error}", now)
            return True
        record.state = "completed"
        self.dirty.add(record.task.task_id)
        result = record.result
        assert result is not None
        self._reward_known(record, self._reward(record, result, report.clip_score))
        self.outbox.append(
            TaskDone(
                record,
                report.clip_score,
                report.simulated,
                response_s=(now - record.task.submitted_at) * self.cfg.time_scale,
                wait_s=(record.dispatched_at - record.task.accepted_at) * self.cfg.time_scale,
            )
        )
        return True

    def _reward(self, record: TaskRecord, result: AttemptResult, quality: float) -> float:
        exec_s = result.init_s + result.run_s
        return float(
            launch_reward(record.launch_wait_s, exec_s, record.launch_queue_wait_s, quality, self.cfg.reward)
        )

    # ----- inputs: the clock -----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Heartbeat timeouts, deadlines of queued tasks, orphaned gangs, impossible tasks."""
        for executor in self.executors.values():
            if executor.alive and now - executor.last_seen > self.cfg.heartbeat_timeout_s:
                self._executor_lost(executor, now, f"executor {executor.executor_id} missed its heartbeats")
            if executor.held_until is not None and now >= executor.held_until:
                executor.held_until = None
        alive = sum(e.alive for e in self.executors.values())
        for task_id in list(self.queue):
            record = self.tasks[task_id]
            deadline = record.task.deadline_at
            if deadline is not None and now > deadline:
                self._fail(record, Reason.DEADLINE_EXCEEDED, "deadline passed while queued", now)
            elif record.task.patches > alive and now - record.task.accepted_at > self.cfg.no_capacity_after_s:
                message = f"needs {record.task.patches} servers, the cluster has {alive}"
                self._fail(record, Reason.NO_CAPACITY, message, now)
        for record in list(self.tasks.values()):
            if record.state == "running":
                self._check_orphan(record, now)

    def _check_orphan(self, record: TaskRecord, now: float) -> None:
        """A gang none of whose members shows the task (e.g. a dispatch lost across an aggregator
        restart) fails after a grace period, so the task is retried instead of waiting forever."""
        members = [self.executors.get(m) for m in record.gang]
        shows_task = any(
            e is not None and e.current_task_id == record.task.task_id and e.state is not ExecState.IDLE
            for e in members
        )
        if shows_task or now - record.dispatched_at < self.cfg.orphan_grace_s:
            record.orphan_since = None
            return
        if record.orphan_since is None:
            record.orphan_since = now
        elif now - record.orphan_since > self.cfg.orphan_grace_s:
            message = "no gang member is running the task"
            self._attempt_failed(record.task.task_id, record.attempt, Reason.EXECUTOR_ERROR, message, now)

    # ----- failures --------------------------------------------------------------------------------
    def _attempt_failed(self, task_id: str, attempt: int, reason: Reason, message: str, now: float) -> None:
        record = self.tasks.get(task_id)
        if record is None or record.state != "running" or record.attempt != attempt:
            return
        self._release_gang(record)
        record.last_error = f"{reason.name}: {message}"
        if reason is Reason.EXECUTOR_BUSY and record.busy_refusals < self.cfg.max_busy_refusals:
            # The gang was released a little early (a member still finishing its last attempt, or
            # running this task's attempt we gave up on): hold it until it reports, and retry.
            record.busy_refusals += 1
            self._hold(record.gang, now)
        if reason in FINAL_REASONS:
            self._fail(record, reason, message, now)
        elif (counted := record.attempt - record.busy_refusals) >= self.cfg.max_attempts:
            self._fail(record, Reason.RETRIES_EXHAUSTED, f"{counted} attempts; last: {message}", now)
        else:
            record.state, record.gang, record.orphan_since = "queued", (), None
            self.queue.appendleft(task_id)  # a retry goes first: it has waited longest
            self.dirty.add(task_id)

    def _fail(self, record: TaskRecord, reason: Reason, message: str, now: float) -> None:
        if record.terminal:
            return
        if record.state == "queued":
            self.queue.remove(record.task.task_id)
        self._release_gang(record)
        record.state, record.last_error = "failed", f"{reason.name}: {message}"
        self.dirty.add(record.task.task_id)
        self._reward_known(record, 0.0)  # a launch that produced nothing earned nothing
        self.outbox.append(TaskFailedOut(record, reason, message))

    def _hold(self, members: tuple[str, ...], now: float) -> None:
        for member in members:
            executor = self.executors.get(member)
            if executor is not None:
                executor.held_until, executor.held_after = now + self.cfg.busy_hold_s, executor.sequence

    def _release_gang(self, record: TaskRecord) -> None:
        for member in record.gang:
            executor = self.executors.get(member)
            if executor is not None and executor.assigned == (record.task.task_id, record.attempt):
                executor.assigned = None

    # ----- decisions -------------------------------------------------------------------------------
    def needs_decision(self) -> bool:
        """Something queued and some server free to start it."""
        return bool(self.queue) and any(e.schedulable for e in self.executors.values())

    def snapshot(self, now: float) -> Snapshot:
        self._roll_episode(now)
        scale = self.cfg.time_scale
        servers = tuple(
            ServerInfo(
                server_id=e.executor_id,
                idle=e.schedulable,
                remaining_s=0.0 if e.schedulable else max(e.remaining_s, 0.0),
                resident_models=e.resident_models,
                speed=e.speed,
            )
            for e in sorted(self.executors.values(), key=lambda e: e.executor_id)
            if e.alive
        )
        visible = [self.tasks[t] for t in list(self.queue)[: self.cfg.visible_queue]]
        queue = tuple(
            TaskInfo(
                task_id=r.task.task_id,
                waiting_s=(now - r.task.accepted_at) * scale,
                patches=r.task.patches,
                model=r.task.model,
                min_steps=r.task.qos.min_steps,
                max_steps=r.task.qos.max_steps,
                min_quality=r.task.qos.min_quality,
                priority=r.task.qos.priority,
            )
            for r in visible
        )
        return Snapshot(
            now_s=(now - self.episode_start) * scale,
            servers=servers,
            queue=queue,
            total_queued=len(self.queue),
            arrived=self.episode_arrived,
            launched=self.episode_launched,
        )

    def _roll_episode(self, now: float) -> None:
        """Live episode windows keep the policy's progress features in their trained range."""
        elapsed = (now - self.episode_start) * self.cfg.time_scale
        if self.episode_arrived >= self.cfg.episode_tasks or elapsed >= self.cfg.episode_time_s:
            self.episode_start, self.episode_arrived, self.episode_launched = now, 0, 0

    def steps_allowed(self, steps: int) -> bool:
        """Within the system's step range (a decision asking for more would occupy its gang for as long
        as that many steps take: 2^32 - 1 of them is decades)."""
        return self.cfg.min_steps <= steps <= self.cfg.max_steps

    def apply(self, snapshot: Snapshot, decision: Decision, policy_version: int, now: float) -> bool:
        """Carry out a decision taken on `snapshot`. True when a gang was dispatched; a launch with
        steps outside the system's range is refused (nothing starts, the task stays queued)."""
        step = self._record_decision(snapshot, decision, policy_version)
        if not decision.execute:
            return False
        record = self.tasks.get(decision.task_id)
        if not self.steps_allowed(decision.steps):
            record = None
        placement = None if record is None or record.state != "queued" else self._place(record)
        if record is None or placement is None:
            self.pending[step].reward = 0.0  # a launch that started nothing earned nothing
            return False
        self._launch(record, decision, placement, policy_version, step, snapshot, now)
        return True

    def _place(self, record: TaskRecord) -> Placement | None:
        servers = [e for e in sorted(self.executors.values(), key=lambda e: e.executor_id) if e.alive]
        info = [
            ServerInfo(e.executor_id, e.schedulable, e.remaining_s, e.resident_models, e.speed)
            for e in servers
        ]
        task_info = TaskInfo(record.task.task_id, 0.0, record.task.patches, record.task.model)
        return select_servers(task_info, info, self.cfg.models_per_server)

    def _launch(
        self,
        record: TaskRecord,
        decision: Decision,
        placement: Placement,
        policy_version: int,
        step: int,
        snapshot: Snapshot,
        now: float,
    ) -> None:
        task_id = record.task.task_id
        self.queue.remove(task_id)
        self.group_counter += 1
        self.episode_launched += 1
        scale = self.cfg.time_scale
        remaining = [t.waiting_s for t in snapshot.queue if t.task_id != task_id]
        record.state, record.attempt = "running", record.attempt + 1
        record.gang, record.steps, record.group_id = placement.server_ids, decision.steps, self.group_counter
        record.dispatched_at, record.policy_version, record.transition = now, policy_version, step
        record.launch_wait_s = (now - record.task.accepted_at) * scale
        record.launch_queue_wait_s = sum(remaining) / len(remaining) if remaining else 0.0
        record.result, record.orphan_since = None, None
        for member in placement.server_ids:
            self.executors[member].assigned = (task_id, record.attempt)
        self.dirty.add(task_id)
        hosts = tuple(self.executors[m].host for m in placement.server_ids)
        port = self.cfg.rendezvous_port_base + self.group_counter % self.cfg.rendezvous_port_span
        self.outbox.append(DispatchGang(record, placement, hosts, port, record.task.deadline_at))

    # ----- experience ------------------------------------------------------------------------------
    def _record_decision(self, snapshot: Snapshot, decision: Decision, policy_version: int) -> int:
        """Close the previous transition with this state as its s'; open a new one."""
        if self.last_transition is not None and self.last_transition in self.pending:
            self.pending[self.last_transition].next_observation = snapshot
            self._emit_ready(self.last_transition)
        step = self.step_counter
        self.step_counter += 1
        self.pending[step] = _Pending(snapshot, decision, policy_version)
        if not decision.execute:
            self.pending[step].reward = 0.0
        self.last_transition = step
        return step

    def _reward_known(self, record: TaskRecord, reward: float) -> None:
        pending = self.pending.get(record.transition)
        if pending is not None:
            pending.reward = reward
            self._emit_ready(record.transition)

    def _emit_ready(self, step: int) -> None:
        pending = self.pending[step]
        if pending.next_observation is None or pending.reward is None:
            return
        del self.pending[step]
        d = pending.decision
        self.outbox.append(
            Transition(
                step,
                pending.observation,
                d.action,
                pending.reward,
                pending.next_observation,
                d.execute,
                d.task_id,
                d.steps,
                pending.policy_version,
            )
        )

    # ----- the shell's side ------------------------------------------------------------------------
    def take_effects(self) -> list[Effect]:
        effects, self.outbox = self.outbox, []
        return effects

    def take_dirty(self) -> Iterable[TaskRecord]:
        """The records changed since the last call, for the journal. An ended task leaves memory
        here: from now on the journal holds it (and tells a redelivered duplicate apart), so memory
        and the per-tick scans grow with the tasks in flight, not with every task ever served."""
        dirty, self.dirty = self.dirty, set()
        records = [self.tasks[t] for t in dirty]
        for record in records:
            if record.terminal:
                del self.tasks[record.task.task_id]
                self.ended[record.state] += 1
        return records

    def counts(self) -> dict[str, int]:
        """Tasks by state: those in flight, and those ended since this process started."""
        out: Counter[str] = Counter(self.ended)
        out.update(record.state for record in self.tasks.values())
        return dict(out)


def _seed_of(task_id: str) -> int:
    """A sampler seed drawn from the task id (stable across restarts and retries)."""
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "little") >> 1
