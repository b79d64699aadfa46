"""Protobuf <-> domain conversion, in one place: protobuf types stop here.

Domain types are the plain dataclasses of `policy_models.live` (snapshots, decisions) and
`services.common.domain` (tasks).
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from eat.v1 import cluster_pb2, common_pb2, executor_pb2, policy_service_pb2, quality_pb2, tasks_pb2
from policy_models.live import Decision, ServerInfo, Snapshot, TaskInfo
from services.common.domain import (
    AttemptResult,
    ExecState,
    ExecutorReport,
    ImageInfo,
    QosSpec,
    QualityResult,
    Reason,
    Task,
)


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


# ----- executors, results, quality ---------------------------------------------------------------------
_EXEC_STATES = {
    executor_pb2.EXECUTOR_STATE_IDLE: ExecState.IDLE,
    executor_pb2.EXECUTOR_STATE_BUSY: ExecState.BUSY,
    executor_pb2.EXECUTOR_STATE_DRAINING: ExecState.DRAINING,
    executor_pb2.EXECUTOR_STATE_DOWN: ExecState.DOWN,
}


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


def heartbeat(message: executor_pb2.ExecutorHeartbeat) -> ExecutorReport:
    return ExecutorReport(
        executor_id=message.executor_id,
        incarnation=message.incarnation,
        sequence=message.sequence,
        heartbeat_only=True,
        sent_at=epoch_s(message.sent_at),
    )


def failure_reason(reason: Reason) -> int:
    """The eat.v1.FailureReason value of a domain Reason (same names)."""
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


def attempt_result(message: executor_pb2.TaskResult) -> AttemptResult:
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


def quality(message: quality_pb2.QualityReport) -> QualityResult:
    return QualityResult(
        task_id=message.task_id,
        attempt=message.attempt,
        clip_score=message.clip_score,
        simulated=message.simulated,
        error=message.error,
    )
