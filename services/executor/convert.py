"""The protobuf edge of the executor: GangDispatch in; TaskResult, ExecutorStatus, ExecutorHeartbeat out."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from eat.v1 import common_pb2, executor_pb2
from services.common.bus import Reject
from services.common.convert import image_ref
from services.executor.core import (
    AttemptResult,
    Dispatch,
    ExecutorState,
    Rendezvous,
    StatusSnapshot,
    Timings,
)

_STATES = {
    ExecutorState.IDLE: executor_pb2.EXECUTOR_STATE_IDLE,
    ExecutorState.BUSY: executor_pb2.EXECUTOR_STATE_BUSY,
    ExecutorState.DRAINING: executor_pb2.EXECUTOR_STATE_DRAINING,
}


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def _datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


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
        deadline=_datetime(message.deadline) if message.HasField("deadline") else None,
        dispatched_at=_datetime(message.dispatched_at) if message.HasField("dispatched_at") else None,
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


def result_to_proto(result: AttemptResult) -> executor_pb2.TaskResult:
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
        finished_at=_timestamp(result.finished_at),
    )
    if result.failure is not None:
        reason = common_pb2.FailureReason.Value(f"FAILURE_REASON_{result.failure.code.value}")
        message.error.CopyFrom(common_pb2.Error(reason=reason, message=result.failure.message))
    if result.image is not None:
        message.image.CopyFrom(image_ref(result.image))
    return message


def status_to_proto(status: StatusSnapshot) -> executor_pb2.ExecutorStatus:
    return executor_pb2.ExecutorStatus(
        executor_id=status.executor_id,
        state=_STATES[status.state],
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
        reported_at=_timestamp(status.reported_at),
        incarnation=status.incarnation,
    )


def heartbeat_to_proto(
    executor_id: str, sequence: int, incarnation: str, sent_at: datetime
) -> executor_pb2.ExecutorHeartbeat:
    return executor_pb2.ExecutorHeartbeat(
        executor_id=executor_id, sent_at=_timestamp(sent_at), sequence=sequence, incarnation=incarnation
    )
