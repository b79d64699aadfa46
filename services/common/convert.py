"""Protobuf <-> domain conversion, in one place for every service: protobuf types stop here.

Domain types are the plain dataclasses of `policy_models.live` (snapshots, decisions),
`services.common.domain` (tasks, results, transitions) and the services' pure cores (the executor's
dispatches and reports, the evaluator's requests and outcomes, the trainer's promotions); those cores
never see a protobuf type. Sections follow the message families.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from eat.v1 import (
    cluster_pb2,
    common_pb2,
    executor_pb2,
    learning_pb2,
    policy_service_pb2,
    quality_pb2,
    tasks_pb2,
)
from policy_models.live import Decision, ServerInfo, Snapshot, TaskInfo
from services.common.bus import Reject
from services.common.domain import (
    AttemptResult,
    ExecState,
    ExecutorReport,
    ImageInfo,
    QosSpec,
    QualityResult,
    Reason,
    Task,
    Transition,
)
from services.evaluator.core import EvalRequest, QualityOutcome
from services.executor.core import AttemptResult as MemberResult  # one gang member's own report
from services.executor.core import (
    Dispatch,
    ExecutorState,
    FailureCode,
    Rendezvous,
    StatusSnapshot,
    Timings,
)

if TYPE_CHECKING:  # the trainer's core loads torch: an annotation must not pull it into every service
    from services.trainer.core import Promotion


# ----- time --------------------------------------------------------------------------------------------
def timestamp(seconds: float | None = None) -> Timestamp:
    """A protobuf Timestamp of epoch `seconds` (now when None)."""
    ts = Timestamp()
    if seconds is None:
        ts.GetCurrentTime()
    else:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def epoch_s(ts: Timestamp) -> float:
    """Epoch seconds of a Timestamp (0.0 when unset)."""
    return ts.seconds + ts.nanos * 1e-9


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def timestamp_of(when: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime (through the datetime itself: no float rounding)."""
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def datetime_of(stamp: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


# ----- snapshots and decisions -----------------------------------------------------------------------
def snapshot_to_proto(snapshot: Snapshot, taken_at: float | None = None) -> cluster_pb2.ClusterSnapshot:
    message = cluster_pb2.ClusterSnapshot(
        now_s=snapshot.now_s,
        total_queued=snapshot.total_queued,
        arrived=snapshot.arrived,
        launched=snapshot.launched,
    )
    for s in snapshot.servers:
        message.servers.add(
            server_id=s.server_id,
            idle=s.idle,
            remaining_s=s.remaining_s,
            resident_models=s.resident_models,
            group_id=s.group_id,
            group_size=s.group_size,
            speed_factor=s.speed,
        )
    for t in snapshot.queue:
        queued = message.queue.add(task_id=t.task_id, waiting_s=t.waiting_s, patches=t.patches, model=t.model)
        qos = queued.qos
        qos.min_quality, qos.priority = t.min_quality, t.priority
        if t.max_steps is not None:
            qos.max_steps = t.max_steps
        if t.min_steps is not None:
            qos.min_steps = t.min_steps
    if taken_at is not None:
        message.taken_at.CopyFrom(timestamp(taken_at))
    return message


def snapshot_from_proto(message: cluster_pb2.ClusterSnapshot) -> Snapshot:
    servers = tuple(
        ServerInfo(
            server_id=s.server_id,
            idle=s.idle,
            remaining_s=s.remaining_s,
            resident_models=tuple(s.resident_models),
            speed=s.speed_factor or 1.0,
            group_id=s.group_id,
            group_size=s.group_size,
        )
        for s in message.servers
    )
    queue = tuple(
        TaskInfo(
            task_id=t.task_id,
            waiting_s=t.waiting_s,
            patches=t.patches,
            model=t.model,
            min_steps=t.qos.min_steps if t.qos.HasField("min_steps") else None,
            max_steps=t.qos.max_steps if t.qos.HasField("max_steps") else None,
            min_quality=t.qos.min_quality,
            priority=t.qos.priority,
        )
        for t in message.queue
    )
    return Snapshot(
        now_s=message.now_s,
        servers=servers,
        queue=queue,
        total_queued=max(message.total_queued, len(queue)),
        arrived=message.arrived,
        launched=message.launched,
    )


def decision_to_proto(
    decision: Decision, request_id: str, policy_version: int, policy_name: str, latency_us: int
) -> policy_service_pb2.DecideResponse:
    return policy_service_pb2.DecideResponse(
        request_id=request_id,
        execute=decision.execute,
        task_id=decision.task_id,
        steps=decision.steps,
        action=decision.action,
        policy_version=policy_version,
        policy_name=policy_name,
        decide_latency_us=latency_us,
    )


def decision_from_proto(message: policy_service_pb2.DecideResponse, snapshot: Snapshot) -> Decision:
    """The decision in a reply; `slot` is found again in the snapshot (-1 when waiting)."""
    if not message.execute:
        return Decision(False, action=tuple(message.action))
    slot = next((i for i, t in enumerate(snapshot.queue) if t.task_id == message.task_id), -1)
    return Decision(True, message.task_id, message.steps, slot, tuple(message.action))


# ----- tasks -----------------------------------------------------------------------------------------
def task_from_submission(submission: tasks_pb2.TaskSubmission, accepted_at: float) -> Task:
    qos = submission.qos
    return Task(
        task_id=submission.task_id,
        prompt=submission.prompt,
        model=submission.model,
        patches=submission.patches,
        qos=QosSpec(
            min_quality=qos.min_quality,
            deadline_s=qos.deadline_s,
            priority=qos.priority,
            max_steps=qos.max_steps if qos.HasField("max_steps") else None,
            min_steps=qos.min_steps if qos.HasField("min_steps") else None,
        ),
        submitted_at=epoch_s(submission.submitted_at) or accepted_at,
        accepted_at=accepted_at,
        seed=submission.seed if submission.HasField("seed") else None,
        reply_to=submission.reply_to,
        correlation_id=submission.correlation_id,
    )


def qos_to_proto(qos: QosSpec) -> common_pb2.Qos:
    message = common_pb2.Qos(min_quality=qos.min_quality, deadline_s=qos.deadline_s, priority=qos.priority)
    if qos.max_steps is not None:
        message.max_steps = qos.max_steps
    if qos.min_steps is not None:
        message.min_steps = qos.min_steps
    return message


def task_to_submission(task: Task) -> tasks_pb2.TaskSubmission:
    submission = tasks_pb2.TaskSubmission(
        task_id=task.task_id,
        prompt=task.prompt,
        model=task.model,
        patches=task.patches,
        qos=qos_to_proto(task.qos),
        submitted_at=timestamp(task.submitted_at),
        reply_to=task.reply_to,
        correlation_id=task.correlation_id,
    )
    if task.seed is not None:
        submission.seed = task.seed
    return submission


# ----- gang dispatch (aggregator -> executor) -----------------------------------------------------------
def dispatch_from_proto(message: executor_pb2.GangDispatch) -> Dispatch:
    """Plain data from a GangDispatch; one without a task id or gang cannot be answered: `Reject`."""
    if not message.task_id:
        raise Reject("GangDispatch.task_id is empty")
    if not message.gang.members:
        raise Reject("GangDispatch.gang.members is empty")
    return Dispatch(
        task_id=message.task_id,
        attempt=message.attempt,
        prompt=message.prompt,
        model=message.model,
        steps=message.steps,
        seed=message.seed,
        members=tuple(message.gang.members),
        group_id=message.gang.group_id,
        rank=message.rank,
        expect_reload=message.expect_reload,
        deadline=datetime_of(message.deadline) if message.HasField("deadline") else None,
        dispatched_at=datetime_of(message.dispatched_at) if message.HasField("dispatched_at") else None,
        rendezvous=_rendezvous(message.rendezvous) if message.HasField("rendezvous") else None,
    )


def _rendezvous(message: executor_pb2.Rendezvous) -> Rendezvous:
    return Rendezvous(
        host=message.host,
        port=message.port,
        group_name=message.group_name,
        epoch=message.epoch,
        timeout_s=message.timeout_s,
    )


# ----- executor status and heartbeats (executor -> aggregator) -----------------------------------------
_EXEC_STATES = {
    executor_pb2.EXECUTOR_STATE_IDLE: ExecState.IDLE,
    executor_pb2.EXECUTOR_STATE_BUSY: ExecState.BUSY,
    executor_pb2.EXECUTOR_STATE_DRAINING: ExecState.DRAINING,
    executor_pb2.EXECUTOR_STATE_DOWN: ExecState.DOWN,
}
# The executor's own states (it never reports itself DOWN: the aggregator infers that).
_EXECUTOR_STATE_VALUES = {
    ExecutorState.IDLE: executor_pb2.EXECUTOR_STATE_IDLE,
    ExecutorState.BUSY: executor_pb2.EXECUTOR_STATE_BUSY,
    ExecutorState.DRAINING: executor_pb2.EXECUTOR_STATE_DRAINING,
}


def executor_status_to_proto(status: StatusSnapshot) -> executor_pb2.ExecutorStatus:
    return executor_pb2.ExecutorStatus(
        executor_id=status.executor_id,
        state=_EXECUTOR_STATE_VALUES[status.state],
        current_task_id=status.current_task_id,
        current_attempt=status.current_attempt,
        remaining_s=status.remaining_s,
        resident_models=list(status.resident_models),
        max_resident_models=status.max_resident_models,
        speed_factor=status.speed_factor,
        device=status.device,
        group_id=status.group_id,
        group_size=status.group_size,
        host=status.host,
        sequence=status.sequence,
        reported_at=timestamp_of(status.reported_at),
        incarnation=status.incarnation,
    )


def executor_status(message: executor_pb2.ExecutorStatus) -> ExecutorReport:
    return ExecutorReport(
        executor_id=message.executor_id,
        incarnation=message.incarnation,
        sequence=message.sequence,
        state=_EXEC_STATES.get(message.state, ExecState.DOWN),
        current_task_id=message.current_task_id,
        current_attempt=message.current_attempt,
        remaining_s=message.remaining_s,
        resident_models=tuple(message.resident_models),
        max_resident_models=message.max_resident_models,
        speed=message.speed_factor or 1.0,
        host=message.host,
        sent_at=epoch_s(message.reported_at),
    )


def heartbeat_to_proto(
    executor_id: str, sequence: int, incarnation: str, sent_at: datetime
) -> executor_pb2.ExecutorHeartbeat:
    return executor_pb2.ExecutorHeartbeat(
        executor_id=executor_id, sent_at=timestamp_of(sent_at), sequence=sequence, incarnation=incarnation
    )


def heartbeat(message: executor_pb2.ExecutorHeartbeat) -> ExecutorReport:
    return ExecutorReport(
        executor_id=message.executor_id,
        incarnation=message.incarnation,
        sequence=message.sequence,
        heartbeat_only=True,
        sent_at=epoch_s(message.sent_at),
    )


# ----- task results (executor -> aggregator and evaluator) ---------------------------------------------
def failure_reason(reason: Reason | FailureCode) -> int:
    """The eat.v1.FailureReason value of a domain Reason or an executor FailureCode (both are named
    after its values)."""
    return common_pb2.FailureReason.Value(f"FAILURE_REASON_{reason.name}")


def reason_of(value: int) -> Reason:
    name = common_pb2.FailureReason.Name(value).removeprefix("FAILURE_REASON_")
    return Reason[name] if name in Reason.__members__ else Reason.INTERNAL


def image_info(message: common_pb2.ImageRef) -> ImageInfo:
    return ImageInfo(
        message.uri, message.width, message.height, message.format, message.size_bytes, message.sha256
    )


def image_ref(image: ImageInfo) -> common_pb2.ImageRef:
    return common_pb2.ImageRef(
        uri=image.uri,
        width=image.width,
        height=image.height,
        format=image.format,
        size_bytes=image.size_bytes,
        sha256=image.sha256,
    )


def _timings_to_proto(timings: Timings) -> common_pb2.Timings:
    return common_pb2.Timings(
        queue_wait_s=timings.queue_wait_s,
        init_s=timings.init_s,
        group_setup_s=timings.group_setup_s,
        step_mean_s=timings.step_mean_s,
        denoise_s=timings.denoise_s,
        decode_s=timings.decode_s,
        total_s=timings.total_s,
    )


def task_result_to_proto(result: MemberResult) -> executor_pb2.TaskResult:
    """The TaskResult a gang member publishes."""
    message = executor_pb2.TaskResult(
        task_id=result.task_id,
        attempt=result.attempt,
        executor_ids=list(result.executor_ids),
        group_id=result.group_id,
        success=result.success,
        timings=_timings_to_proto(result.timings),
        model_reused=result.model_reused,
        prompt=result.prompt,
        model=result.model,
        steps=result.steps,
        seed=result.seed,
        simulated=result.simulated,
        simulated_quality=result.simulated_quality,
        finished_at=timestamp_of(result.finished_at),
    )
    if result.failure is not None:
        error = common_pb2.Error(reason=failure_reason(result.failure.code), message=result.failure.message)
        message.error.CopyFrom(error)
    if result.image is not None:
        message.image.CopyFrom(image_ref(result.image))
    return message


def attempt_result(message: executor_pb2.TaskResult) -> AttemptResult:
    """A TaskResult as the aggregator tracks it."""
    t = message.timings
    return AttemptResult(
        task_id=message.task_id,
        attempt=message.attempt,
        success=message.success,
        reason=None if message.success else reason_of(message.error.reason),
        message=message.error.message,
        image=image_info(message.image) if message.HasField("image") else None,
        init_s=t.init_s + t.group_setup_s,
        run_s=t.denoise_s + t.decode_s,
        reused=message.model_reused,
        simulated=message.simulated,
        seed=message.seed,
    )


def eval_request_from_proto(message: executor_pb2.TaskResult) -> EvalRequest:
    """A TaskResult as the evaluator needs it; one without a task id cannot be reported on: `Reject`."""
    if not message.task_id:
        raise Reject("TaskResult.task_id is empty")
    return EvalRequest(
        task_id=message.task_id,
        attempt=message.attempt,
        prompt=message.prompt,
        success=message.success,
        simulated=message.simulated,
        simulated_quality=message.simulated_quality,
        image_uri=message.image.uri,
        image_sha256=message.image.sha256,
        model=message.model,
        steps=message.steps,
    )


# ----- quality reports (evaluator -> aggregator) -------------------------------------------------------
def quality_report_to_proto(outcome: QualityOutcome) -> quality_pb2.QualityReport:
    return quality_pb2.QualityReport(
        task_id=outcome.task_id,
        attempt=outcome.attempt,
        clip_score=outcome.clip_score,
        simulated=outcome.simulated,
        evaluator_model=outcome.evaluator_model,
        eval_s=outcome.eval_s,
        evaluated_at=timestamp_of(outcome.evaluated_at),
        error=outcome.error,
    )


def quality(message: quality_pb2.QualityReport) -> QualityResult:
    return QualityResult(
        task_id=message.task_id,
        attempt=message.attempt,
        clip_score=message.clip_score,
        simulated=message.simulated,
        error=message.error,
    )


# ----- learning: experience and policy updates (aggregator -> trainer -> policy server) ----------------
def transition_from_proto(message: learning_pb2.Experience) -> Transition:
    """The domain transition of an Experience; ValueError when a snapshot is missing."""
    for name in ("observation", "next_observation"):
        if not message.HasField(name):
            raise ValueError(f"Experience without {name}")
    return Transition(
        episode_id=message.episode_id,
        step_index=message.step_index,
        observation=snapshot_from_proto(message.observation),
        action=tuple(message.action),
        reward=message.reward,
        next_observation=snapshot_from_proto(message.next_observation),
        done=message.done,
        truncated=message.truncated,
        obs_spec_version=message.obs_spec_version,
        policy_version=message.policy_version,
        source=message.source,
    )


def policy_updated_to_proto(promotion: Promotion) -> learning_pb2.PolicyUpdated:
    result = promotion.evaluation
    return learning_pb2.PolicyUpdated(
        version=promotion.version,
        checkpoint_uri=str(promotion.directory),
        algorithm=promotion.algorithm,
        obs_spec_version=promotion.obs_spec_version,
        created_at=timestamp(promotion.created_at),
        evaluation=learning_pb2.EvaluationSummary(
            candidate_utility=result.candidate_utility,
            serving_utility=result.serving_utility,
            diff_ci95=result.diff_ci95,  # nan with a single seed: no interval
            serving_version=result.serving_version,
            episodes=result.episodes,
            seeds=result.seeds,
            settings=result.settings,
        ),
    )
