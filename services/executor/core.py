"""The executor's pure rules, free of I/O and protobuf: dispatch checks, the resident-model LRU, the
simulated timing of an attempt, result building and the IDLE/BUSY/DRAINING state machine.

Times are simulated seconds (the cluster's clock) unless a name says wall; the service divides by
`time_scale` only when it waits on the wall clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum, StrEnum

from policy_models.profiles import TimingProfile
from services.common.domain import ImageInfo  # the one stored-image type (re-exported here)

RECENT_ATTEMPTS_KEPT = 256  # finished attempts remembered to ignore redelivered dispatches


class FailureCode(StrEnum):
    """Why this executor could not run an attempt (the subset of eat.v1.FailureReason it reports)."""

    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    INTERNAL = "INTERNAL"
    RENDEZVOUS_FAILED = "RENDEZVOUS_FAILED"  # a gang's members did not all meet in time
    GANG_MEMBER_LOST = "GANG_MEMBER_LOST"  # a formed gang lost a member mid-attempt
    EXECUTOR_BUSY = "EXECUTOR_BUSY"  # still running another attempt: this one never started


@dataclass(frozen=True)
class Failure:
    code: FailureCode
    message: str


class AttemptFailed(Exception):
    """Raised by a runner that cannot start (or finish) an attempt; becomes a failed TaskResult."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(code, message)


class ExecutorState(StrEnum):
    IDLE = "IDLE"
    BUSY = "BUSY"
    DRAINING = "DRAINING"


@dataclass(frozen=True)
class Rendezvous:
    """Where a gang meets: rank 0 serves the TCP store on (host, port) for this formation only."""

    host: str
    port: int
    group_name: str
    epoch: int = 0
    timeout_s: float = 0.0  # 0 = the executor's own default


@dataclass(frozen=True)
class Dispatch:
    """One member's copy of a GangDispatch."""

    task_id: str
    attempt: int
    prompt: str
    model: str
    steps: int
    seed: int
    members: tuple[str, ...]
    group_id: int
    rank: int
    expect_reload: bool = False
    deadline: datetime | None = None  # wall-clock UTC instant; None = no deadline
    dispatched_at: datetime | None = None
    rendezvous: Rendezvous | None = None  # set by the aggregator for every dispatch; gangs need it

    @property
    def gang_size(self) -> int:
        return len(self.members)

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)


@dataclass(frozen=True)
class Timings:
    """Time breakdown of one attempt in simulated seconds (mirrors eat.v1.Timings)."""

    queue_wait_s: float = 0.0
    init_s: float = 0.0
    group_setup_s: float = 0.0
    step_mean_s: float = 0.0
    denoise_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class RunReport:
    """What a runner hands back when an attempt finished well (queue wait is the service's to add)."""

    timings: Timings
    model_reused: bool
    simulated: bool
    simulated_quality: float = 0.0
    image: ImageInfo | None = None


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one attempt as this member reports it (mirrors eat.v1.TaskResult)."""

    task_id: str
    attempt: int
    executor_ids: tuple[str, ...]
    group_id: int
    success: bool
    prompt: str
    model: str
    steps: int
    seed: int
    finished_at: datetime
    failure: Failure | None = None
    timings: Timings = field(default_factory=Timings)
    model_reused: bool = False
    simulated: bool = False
    simulated_quality: float = 0.0
    image: ImageInfo | None = None


def failed_result(dispatch: Dispatch, failure: Failure, finished_at: datetime) -> AttemptResult:
    return AttemptResult(
        task_id=dispatch.task_id,
        attempt=dispatch.attempt,
        executor_ids=dispatch.members,
        group_id=dispatch.group_id,
        success=False,
        prompt=dispatch.prompt,
        model=dispatch.model,
        steps=dispatch.steps,
        seed=dispatch.seed,
        finished_at=finished_at,
        failure=failure,
    )


def success_result(
    dispatch: Dispatch, report: RunReport, queue_wait_s: float, finished_at: datetime
) -> AttemptResult:
    timings = replace(report.timings, queue_wait_s=queue_wait_s)
    return AttemptResult(
        task_id=dispatch.task_id,
        attempt=dispatch.attempt,
        executor_ids=dispatch.members,
        group_id=dispatch.group_id,
        success=True,
        prompt=dispatch.prompt,
        model=dispatch.model,
        steps=dispatch.steps,
        seed=dispatch.seed,
        finished_at=finished_at,
        timings=timings,
        model_reused=report.model_reused,
        simulated=report.simulated,
        simulated_quality=report.simulated_quality,
        image=report.image,
    )


def queue_wait_s(dispatched_at: datetime | None, started_at: datetime, time_scale: float) -> float:
    """Simulated seconds from the aggregator's publish to the start of work (0 when unknown). The wall
    gap is scaled because the aggregator's clock runs time_scale times faster than the wall."""
    if dispatched_at is None:
        return 0.0
    return max(0.0, (started_at - dispatched_at).total_seconds() * time_scale)


class ResidentModels:
    """Models held in GPU memory, least recently used evicted beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._last_used: OrderedDict[str, None] = OrderedDict()  # least recent first

    def __contains__(self, model: object) -> bool:
        return model in self._last_used

    def use(self, model: str) -> list[str]:
        """Mark `model` as just used (loading it if absent); returns the models evicted to make room."""
        self._last_used[model] = None
        self._last_used.move_to_end(model)
        evicted = []
        while len(self._last_used) > self.capacity:
            victim, _ = self._last_used.popitem(last=False)
            evicted.append(victim)
        return evicted

    def most_recent_first(self) -> tuple[str, ...]:
        return tuple(reversed(self._last_used))


@dataclass(frozen=True)
class SimPlan:
    """How long a simulated attempt takes on this member, in simulated seconds."""

    init_s: float
    group_setup_s: float
    step_mean_s: float
    denoise_s: float
    model_reused: bool

    @property
    def total_s(self) -> float:
        return self.init_s + self.group_setup_s + self.denoise_s

    def timings(self) -> Timings:
        return Timings(
            init_s=self.init_s,
            group_setup_s=self.group_setup_s,
            step_mean_s=self.step_mean_s,
            denoise_s=self.denoise_s,
            total_s=self.total_s,
        )


def plan_sim_attempt(
    profile: TimingProfile,
    gang_size: int,
    steps: int,
    speed_factor: float,
    resident: bool,
    expect_reload: bool = False,
) -> SimPlan:
    """Timing rules of a simulated attempt (the simulator's warm mode, seen from one member).

    A resident model costs nothing to start alone and `group_setup_s` to start in a gang; otherwise
    the member loads it cold (`init_s[k]`). A gang member that holds the model still waits for the
    gang's cold load when the aggregator says a member must load (`expect_reload`): members cannot see
    each other, and without the hint a warm rank 0 would report long before a cold rank 1 is free.
    """
    if gang_size not in profile.step_s:
        raise AttemptFailed(
            FailureCode.EXECUTOR_ERROR,
            f"timing profile {profile.name!r} has no gang size {gang_size} (has {list(profile.patch_sizes)})",
        )
    cold = not resident or (gang_size > 1 and expect_reload)
    init_s = profile.init_s[gang_size] if cold else 0.0
    group_setup_s = profile.group_setup_s if not cold and gang_size > 1 else 0.0
    step_mean_s = profile.step_s[gang_size] / speed_factor
    return SimPlan(
        init_s=init_s,
        group_setup_s=group_setup_s,
        step_mean_s=step_mean_s,
        denoise_s=step_mean_s * steps,
        model_reused=resident,
    )


def refusal(
    dispatch: Dispatch,
    executor_id: str,
    models: tuple[str, ...],
    running: Dispatch | None,
    draining: bool,
    now: datetime,
) -> Failure | None:
    """Why this member cannot run `dispatch` now, or None when it can. Checked in this order."""
    members = dispatch.members
    if dispatch.rank >= len(members) or members[dispatch.rank] != executor_id:
        where = members.index(executor_id) if executor_id in members else "absent"
        return Failure(
            FailureCode.INTERNAL,
            f"rank {dispatch.rank} does not match {executor_id}'s position ({where}) in gang {list(members)}",
        )
    if dispatch.steps < 1:
        return Failure(FailureCode.INTERNAL, f"steps must be >= 1, got {dispatch.steps}")
    if draining:
        return Failure(FailureCode.EXECUTOR_ERROR, f"{executor_id} is draining")
    if running is not None:
        return Failure(FailureCode.EXECUTOR_BUSY, f"busy with {running.task_id}")
    # Compared with this host's wall clock: the aggregator sets the deadline as a wall-clock instant.
    if dispatch.deadline is not None and now >= dispatch.deadline:
        return Failure(FailureCode.DEADLINE_EXCEEDED, f"deadline {dispatch.deadline.isoformat()} passed")
    if dispatch.model not in models:
        known = list(models)
        return Failure(FailureCode.MODEL_LOAD_FAILED, f"unknown model {dispatch.model!r}; have {known}")
    return None


class Verdict(Enum):
    RUN = "run"
    REFUSE = "refuse"
    IGNORE = "ignore"  # a redelivered copy of an attempt already running or finished here


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    failure: Failure | None = None


@dataclass(frozen=True)
class Running:
    dispatch: Dispatch
    expected_s: float  # simulated seconds from start to finish
    started_wall_s: float  # monotonic wall clock at the start


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything an ExecutorStatus carries, as plain data."""

    executor_id: str
    state: ExecutorState
    current_task_id: str
    current_attempt: int
    remaining_s: float
    resident_models: tuple[str, ...]
    max_resident_models: int
    speed_factor: float
    device: str
    host: str
    group_id: int
    group_size: int
    sequence: int
    incarnation: str
    reported_at: datetime


class ExecutorCore:
    """The executor's state machine: which attempt runs, what is remembered, the sequence counter."""

    def __init__(self, executor_id: str, models: tuple[str, ...], incarnation: str) -> None:
        self.executor_id = executor_id
        self.models = models
        self.incarnation = incarnation
        self.running: Running | None = None
        self.draining = False
        self._sequence = 0
        self._finished: deque[tuple[str, int]] = deque(maxlen=RECENT_ATTEMPTS_KEPT)

    @property
    def state(self) -> ExecutorState:
        if self.draining:
            return ExecutorState.DRAINING
        return ExecutorState.BUSY if self.running is not None else ExecutorState.IDLE

    def next_sequence(self) -> int:
        """Strictly increasing across statuses and heartbeats of this process."""
        self._sequence += 1
        return self._sequence

    def admit(self, dispatch: Dispatch, now: datetime) -> Admission:
        current = self.running.dispatch if self.running is not None else None
        if (current is not None and current.key == dispatch.key) or dispatch.key in self._finished:
            return Admission(Verdict.IGNORE)  # at-least-once delivery: never run an attempt twice
        failure = refusal(dispatch, self.executor_id, self.models, current, self.draining, now)
        return Admission(Verdict.REFUSE, failure) if failure else Admission(Verdict.RUN)

    def begin(self, dispatch: Dispatch, expected_s: float, started_wall_s: float) -> None:
        if self.running is not None:
            raise RuntimeError(f"already running {self.running.dispatch.key}, cannot begin {dispatch.key}")
        self.running = Running(dispatch, expected_s, started_wall_s)

    def finish(self, dispatch: Dispatch) -> None:
        if self.running is None or self.running.dispatch.key != dispatch.key:
            raise RuntimeError(f"finishing {dispatch.key}, which is not the running attempt")
        self.running = None
        self._finished.append(dispatch.key)

    def drain(self) -> None:
        self.draining = True

    def remaining_s(self, now_wall_s: float, time_scale: float) -> float:
        """Simulated seconds left in the running attempt (0 when idle)."""
        if self.running is None:
            return 0.0
        elapsed = (now_wall_s - self.running.started_wall_s) * time_scale
        return max(0.0, self.running.expected_s - elapsed)

    def snapshot(
        self,
        *,
        resident_models: tuple[str, ...],
        max_resident_models: int,
        speed_factor: float,
        device: str,
        host: str,
        time_scale: float,
        now_wall_s: float,
        reported_at: datetime,
    ) -> StatusSnapshot:
        """The current status; takes the next sequence number."""
        current = self.running.dispatch if self.running is not None else None
        return StatusSnapshot(
            executor_id=self.executor_id,
            state=self.state,
            current_task_id=current.task_id if current else "",
            current_attempt=current.attempt if current else 0,
            remaining_s=self.remaining_s(now_wall_s, time_scale),
            resident_models=resident_models,
            max_resident_models=max_resident_models,
            speed_factor=speed_factor,
            device=device,
            host=host,
            group_id=current.group_id if current else 0,
            group_size=current.gang_size if current else 0,
            sequence=self.next_sequence(),
            incarnation=self.incarnation,
            reported_at=reported_at,
        )


def timing_record(dispatch: Dispatch, result: AttemptResult) -> dict[str, object]:
    """One JSON line of `executor-<id>-timings.jsonl`, kept for calibrating timing profiles."""
    t = result.timings
    return {
        "task_id": dispatch.task_id,
        "attempt": dispatch.attempt,
        "model": dispatch.model,
        "k": dispatch.gang_size,
        "rank": dispatch.rank,
        "steps": dispatch.steps,
        "init_s": t.init_s,
        "group_setup_s": t.group_setup_s,
        "step_mean_s": t.step_mean_s,
        "denoise_s": t.denoise_s,
        "decode_s": t.decode_s,
        "total_s": t.total_s,
        "reused": result.model_reused,
        "simulated": result.simulated,
        "finished_at": result.finished_at.isoformat(),
    }
