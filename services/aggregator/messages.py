"""Protobuf messages the aggregator builds from its core's effects (inbound conversion is in
services.common.convert)."""

from __future__ import annotations

from eat.v1 import executor_pb2, tasks_pb2
from services.aggregator.core import DispatchGang, TaskDone, TaskFailedOut
from services.common.convert import failure_reason, image_ref, timestamp


def gang_dispatch(
    effect: DispatchGang, rank: int, now: float, rendezvous_timeout_s: float
) -> executor_pb2.GangDispatch:
    record, members = effect.record, effect.placement.server_ids
    task = record.task
    message = executor_pb2.GangDispatch(
        task_id=task.task_id,
        attempt=record.attempt,
        prompt=task.prompt,
        model=task.model,
        steps=record.steps,
        seed=record.seed,
        gang=executor_pb2.Gang(members=members, group_id=record.group_id),
        rank=rank,
        rendezvous=executor_pb2.Rendezvous(
            host=effect.hosts[0],
            port=effect.rendezvous_port,
            group_name=f"{task.task_id}-a{record.attempt}-g{record.group_id}",
            epoch=record.group_id,
            timeout_s=rendezvous_timeout_s,
        ),
        expect_reload=not effect.placement.reused,
        dispatched_at=timestamp(now),
        policy_version=record.policy_version,
    )
    if effect.deadline_at is not None:
        message.deadline.CopyFrom(timestamp(effect.deadline_at))
    return message


def task_completed(effect: TaskDone, now: float) -> tasks_pb2.TaskCompleted:
    record = effect.record
    result = record.result
    assert result is not None
    summary = tasks_pb2.ResultSummary(
        steps=record.steps,
        gang=record.gang,
        response_s=effect.response_s,
        wait_s=effect.wait_s,
        init_s=result.init_s,
        run_s=result.run_s,
        quality=effect.quality,
        reused=result.reused,
        seed=record.seed,
        simulated=effect.simulated,
    )
    if result.image is not None:
        summary.image.CopyFrom(image_ref(result.image))
    return tasks_pb2.TaskCompleted(
        task_id=record.task.task_id,
        result=summary,
        attempts=record.attempt,
        completed_at=timestamp(now),
        correlation_id=record.task.correlation_id,
    )


def task_failed(effect: TaskFailedOut, now: float) -> tasks_pb2.TaskFailed:
    record = effect.record
    return tasks_pb2.TaskFailed(
        task_id=record.task.task_id,
        reason=failure_reason(effect.reason),
        message=effect.message,
        attempts=record.attempt,
        failed_at=timestamp(now),
        correlation_id=record.task.correlation_id,
    )
