from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_DEADLINE_EXCEEDED: _ClassVar[FailureReason]
    FAILURE_REASON_GANG_MEMBER_LOST: _ClassVar[FailureReason]
    FAILURE_REASON_RENDEZVOUS_FAILED: _ClassVar[FailureReason]
    FAILURE_REASON_MODEL_LOAD_FAILED: _ClassVar[FailureReason]
    FAILURE_REASON_OUT_OF_MEMORY: _ClassVar[FailureReason]
    FAILURE_REASON_EXECUTOR_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_EVALUATION_FAILED: _ClassVar[FailureReason]
    FAILURE_REASON_RETRIES_EXHAUSTED: _ClassVar[FailureReason]
    FAILURE_REASON_NO_CAPACITY: _ClassVar[FailureReason]
    FAILURE_REASON_CANCELLED: _ClassVar[FailureReason]
    FAILURE_REASON_INTERNAL: _ClassVar[FailureReason]
    FAILURE_REASON_EXECUTOR_BUSY: _ClassVar[FailureReason]
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_DEADLINE_EXCEEDED: FailureReason
FAILURE_REASON_GANG_MEMBER_LOST: FailureReason
FAILURE_REASON_RENDEZVOUS_FAILED: FailureReason
FAILURE_REASON_MODEL_LOAD_FAILED: FailureReason
FAILURE_REASON_OUT_OF_MEMORY: FailureReason
FAILURE_REASON_EXECUTOR_ERROR: FailureReason
FAILURE_REASON_EVALUATION_FAILED: FailureReason
FAILURE_REASON_RETRIES_EXHAUSTED: FailureReason
FAILURE_REASON_NO_CAPACITY: FailureReason
FAILURE_REASON_CANCELLED: FailureReason
FAILURE_REASON_INTERNAL: FailureReason
FAILURE_REASON_EXECUTOR_BUSY: FailureReason

class Qos(_message.Message):
    __slots__ = ("min_quality", "deadline_s", "priority", "max_steps", "min_steps")
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    min_quality: float
    deadline_s: float
    priority: int
    max_steps: int
    min_steps: int
    def __init__(self, min_quality: _Optional[float] = ..., deadline_s: _Optional[float] = ..., priority: _Optional[int] = ..., max_steps: _Optional[int] = ..., min_steps: _Optional[int] = ...) -> None: ...

class FieldError(_message.Message):
    __slots__ = ("field", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    reason: str
    def __init__(self, field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("uri", "width", "height", "format", "size_bytes", "sha256")
    URI_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    uri: str
    width: int
    height: int
    format: str
    size_bytes: int
    sha256: str
    def __init__(self, uri: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_wait_s", "init_s", "group_setup_s", "step_mean_s", "denoise_s", "decode_s", "total_s")
    QUEUE_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    INIT_S_FIELD_NUMBER: _ClassVar[int]
    GROUP_SETUP_S_FIELD_NUMBER: _ClassVar[int]
    STEP_MEAN_S_FIELD_NUMBER: _ClassVar[int]
    DENOISE_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    queue_wait_s: float
    init_s: float
    group_setup_s: float
    step_mean_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    def __init__(self, queue_wait_s: _Optional[float] = ..., init_s: _Optional[float] = ..., group_setup_s: _Optional[float] = ..., step_mean_s: _Optional[float] = ..., denoise_s: _Optional[float] = ..., decode_s: _Optional[float] = ..., total_s: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: FailureReason
    message: str
    def __init__(self, reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ...) -> None: ...
