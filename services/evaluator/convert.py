"""The protobuf edge of the evaluator: TaskResult in, QualityReport out."""

from __future__ import annotations

from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp

from eat.v1 import executor_pb2, quality_pb2
from services.common.bus import Reject
from services.evaluator.core import EvalRequest, QualityOutcome


def request_from_proto(message: executor_pb2.TaskResult) -> EvalRequest:
    """Plain data from a TaskResult; one without a task id cannot be reported on: `Reject`."""
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


def report_to_proto(outcome: QualityOutcome) -> quality_pb2.QualityReport:
    evaluated_at = Timestamp()
    evaluated_at.FromDatetime(outcome.evaluated_at.astimezone(UTC))
    return quality_pb2.QualityReport(
        task_id=outcome.task_id,
        attempt=outcome.attempt,
        clip_score=outcome.clip_score,
        simulated=outcome.simulated,
        evaluator_model=outcome.evaluator_model,
        eval_s=outcome.eval_s,
        evaluated_at=evaluated_at,
        error=outcome.error,
    )
