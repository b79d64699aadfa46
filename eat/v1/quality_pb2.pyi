import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QualityReport(_message.Message):
    __slots__ = ("task_id", "attempt", "clip_score", "simulated", "evaluator_model", "eval_s", "evaluated_at", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CLIP_SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    EVAL_S_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    clip_score: float
    simulated: bool
    evaluator_model: str
    eval_s: float
    evaluated_at: _timestamp_pb2.Timestamp
    error: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., clip_score: _Optional[float] = ..., simulated: _Optional[bool] = ..., evaluator_model: _Optional[str] = ..., eval_s: _Optional[float] = ..., evaluated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...
