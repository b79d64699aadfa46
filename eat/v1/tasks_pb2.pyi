import datetime

from eat.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskSubmission(_message.Message):
    __slots__ = ("task_id", "prompt", "model", "patches", "qos", "submitted_at", "seed", "reply_to", "correlation_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    prompt: str
    model: str
    patches: int
    qos: _common_pb2.Qos
    submitted_at: _timestamp_pb2.Timestamp
    seed: int
    reply_to: str
    correlation_id: str
    def __init__(self, task_id: _Optional[str] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., patches: _Optional[int] = ..., qos: _Optional[_Union[_common_pb2.Qos, _Mapping]] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seed: _Optional[int] = ..., reply_to: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class TaskAccepted(_message.Message):
    __slots__ = ("task_id", "submission", "accepted_at", "duplicate", "correlation_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    submission: TaskSubmission
    accepted_at: _timestamp_pb2.Timestamp
    duplicate: bool
    correlation_id: str
    def __init__(self, task_id: _Optional[str] = ..., submission: _Optional[_Union[TaskSubmission, _Mapping]] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duplicate: _Optional[bool] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class TaskRejected(_message.Message):
    __slots__ = ("task_id", "errors", "rejected_at", "correlation_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    errors: _containers.RepeatedCompositeFieldContainer[_common_pb2.FieldError]
    rejected_at: _timestamp_pb2.Timestamp
    correlation_id: str
    def __init__(self, task_id: _Optional[str] = ..., errors: _Optional[_Iterable[_Union[_common_pb2.FieldError, _Mapping]]] = ..., rejected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class ResultSummary(_message.Message):
    __slots__ = ("image", "steps", "gang", "response_s", "wait_s", "init_s", "run_s", "quality", "reused", "seed", "simulated")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    INIT_S_FIELD_NUMBER: _ClassVar[int]
    RUN_S_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    steps: int
    gang: _containers.RepeatedScalarFieldContainer[str]
    response_s: float
    wait_s: float
    init_s: float
    run_s: float
    quality: float
    reused: bool
    seed: int
    simulated: bool
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., steps: _Optional[int] = ..., gang: _Optional[_Iterable[str]] = ..., response_s: _Optional[float] = ..., wait_s: _Optional[float] = ..., init_s: _Optional[float] = ..., run_s: _Optional[float] = ..., quality: _Optional[float] = ..., reused: _Optional[bool] = ..., seed: _Optional[int] = ..., simulated: _Optional[bool] = ...) -> None: ...

class TaskCompleted(_message.Message):
    __slots__ = ("task_id", "result", "attempts", "completed_at", "correlation_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    result: ResultSummary
    attempts: int
    completed_at: _timestamp_pb2.Timestamp
    correlation_id: str
    def __init__(self, task_id: _Optional[str] = ..., result: _Optional[_Union[ResultSummary, _Mapping]] = ..., attempts: _Optional[int] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("task_id", "reason", "message", "attempts", "failed_at", "correlation_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: _common_pb2.FailureReason
    message: str
    attempts: int
    failed_at: _timestamp_pb2.Timestamp
    correlation_id: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[_Union[_common_pb2.FailureReason, str]] = ..., message: _Optional[str] = ..., attempts: _Optional[int] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ...) -> None: ...
