import datetime

from eat.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServerState(_message.Message):
    __slots__ = ("server_id", "idle", "remaining_s", "resident_models", "group_id", "group_size", "speed_factor")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_S_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FACTOR_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    idle: bool
    remaining_s: float
    resident_models: _containers.RepeatedScalarFieldContainer[str]
    group_id: int
    group_size: int
    speed_factor: float
    def __init__(self, server_id: _Optional[str] = ..., idle: _Optional[bool] = ..., remaining_s: _Optional[float] = ..., resident_models: _Optional[_Iterable[str]] = ..., group_id: _Optional[int] = ..., group_size: _Optional[int] = ..., speed_factor: _Optional[float] = ...) -> None: ...

class QueuedTask(_message.Message):
    __slots__ = ("task_id", "waiting_s", "patches", "model", "qos")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WAITING_S_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    waiting_s: float
    patches: int
    model: str
    qos: _common_pb2.Qos
    def __init__(self, task_id: _Optional[str] = ..., waiting_s: _Optional[float] = ..., patches: _Optional[int] = ..., model: _Optional[str] = ..., qos: _Optional[_Union[_common_pb2.Qos, _Mapping]] = ...) -> None: ...

class ClusterSnapshot(_message.Message):
    __slots__ = ("now_s", "servers", "queue", "total_queued", "taken_at", "arrived", "launched")
    NOW_S_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_QUEUED_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    ARRIVED_FIELD_NUMBER: _ClassVar[int]
    LAUNCHED_FIELD_NUMBER: _ClassVar[int]
    now_s: float
    servers: _containers.RepeatedCompositeFieldContainer[ServerState]
    queue: _containers.RepeatedCompositeFieldContainer[QueuedTask]
    total_queued: int
    taken_at: _timestamp_pb2.Timestamp
    arrived: int
    launched: int
    def __init__(self, now_s: _Optional[float] = ..., servers: _Optional[_Iterable[_Union[ServerState, _Mapping]]] = ..., queue: _Optional[_Iterable[_Union[QueuedTask, _Mapping]]] = ..., total_queued: _Optional[int] = ..., taken_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., arrived: _Optional[int] = ..., launched: _Optional[int] = ...) -> None: ...
