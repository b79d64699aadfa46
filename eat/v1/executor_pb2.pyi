import datetime

from eat.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutorState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTOR_STATE_UNSPECIFIED: _ClassVar[ExecutorState]
    EXECUTOR_STATE_IDLE: _ClassVar[ExecutorState]
    EXECUTOR_STATE_BUSY: _ClassVar[ExecutorState]
    EXECUTOR_STATE_DRAINING: _ClassVar[ExecutorState]
    EXECUTOR_STATE_DOWN: _ClassVar[ExecutorState]
EXECUTOR_STATE_UNSPECIFIED: ExecutorState
EXECUTOR_STATE_IDLE: ExecutorState
EXECUTOR_STATE_BUSY: ExecutorState
EXECUTOR_STATE_DRAINING: ExecutorState
EXECUTOR_STATE_DOWN: ExecutorState

class ExecutorStatus(_message.Message):
    __slots__ = ("executor_id", "state", "current_task_id", "current_attempt", "remaining_s", "resident_models", "max_resident_models", "speed_factor", "device", "group_id", "group_size", "host", "sequence", "reported_at", "incarnation")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_S_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESIDENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    state: ExecutorState
    current_task_id: str
    current_attempt: int
    remaining_s: float
    resident_models: _containers.RepeatedScalarFieldContainer[str]
    max_resident_models: int
    speed_factor: float
    device: str
    group_id: int
    group_size: int
    host: str
    sequence: int
    reported_at: _timestamp_pb2.Timestamp
    incarnation: str
    def __init__(self, executor_id: _Optional[str] = ..., state: _Optional[_Union[ExecutorState, str]] = ..., current_task_id: _Optional[str] = ..., current_attempt: _Optional[int] = ..., remaining_s: _Optional[float] = ..., resident_models: _Optional[_Iterable[str]] = ..., max_resident_models: _Optional[int] = ..., speed_factor: _Optional[float] = ..., device: _Optional[str] = ..., group_id: _Optional[int] = ..., group_size: _Optional[int] = ..., host: _Optional[str] = ..., sequence: _Optional[int] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., incarnation: _Optional[str] = ...) -> None: ...

class ExecutorHeartbeat(_message.Message):
    __slots__ = ("executor_id", "sent_at", "sequence", "incarnation")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    sent_at: _timestamp_pb2.Timestamp
    sequence: int
    incarnation: str
    def __init__(self, executor_id: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., incarnation: _Optional[str] = ...) -> None: ...

class Rendezvous(_message.Message):
    __slots__ = ("host", "port", "group_name", "epoch", "timeout_s")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    group_name: str
    epoch: int
    timeout_s: float
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., group_name: _Optional[str] = ..., epoch: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class Gang(_message.Message):
    __slots__ = ("members", "group_id")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    group_id: int
    def __init__(self, members: _Optional[_Iterable[str]] = ..., group_id: _Optional[int] = ...) -> None: ...

class GangDispatch(_message.Message):
    __slots__ = ("task_id", "attempt", "prompt", "model", "steps", "seed", "gang", "rank", "rendezvous", "expect_reload", "deadline", "dispatched_at", "policy_version")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_FIELD_NUMBER: _ClassVar[int]
    EXPECT_RELOAD_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    prompt: str
    model: str
    steps: int
    seed: int
    gang: Gang
    rank: int
    rendezvous: Rendezvous
    expect_reload: bool
    deadline: _timestamp_pb2.Timestamp
    dispatched_at: _timestamp_pb2.Timestamp
    policy_version: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., gang: _Optional[_Union[Gang, _Mapping]] = ..., rank: _Optional[int] = ..., rendezvous: _Optional[_Union[Rendezvous, _Mapping]] = ..., expect_reload: _Optional[bool] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dispatched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "attempt", "executor_ids", "group_id", "success", "error", "image", "timings", "model_reused", "prompt", "model", "steps", "seed", "simulated", "simulated_quality", "finished_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_REUSED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_QUALITY_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    executor_ids: _containers.RepeatedScalarFieldContainer[str]
    group_id: int
    success: bool
    error: _common_pb2.Error
    image: _common_pb2.ImageRef
    timings: _common_pb2.Timings
    model_reused: bool
    prompt: str
    model: str
    steps: int
    seed: int
    simulated: bool
    simulated_quality: float
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., executor_ids: _Optional[_Iterable[str]] = ..., group_id: _Optional[int] = ..., success: _Optional[bool] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., model_reused: _Optional[bool] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., simulated: _Optional[bool] = ..., simulated_quality: _Optional[float] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
