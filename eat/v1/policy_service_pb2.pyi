import datetime

from eat.v1 import cluster_pb2 as _cluster_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecideRequest(_message.Message):
    __slots__ = ("request_id", "snapshot")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    snapshot: _cluster_pb2.ClusterSnapshot
    def __init__(self, request_id: _Optional[str] = ..., snapshot: _Optional[_Union[_cluster_pb2.ClusterSnapshot, _Mapping]] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("request_id", "execute", "task_id", "steps", "action", "policy_version", "policy_name", "decide_latency_us")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    DECIDE_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    execute: bool
    task_id: str
    steps: int
    action: _containers.RepeatedScalarFieldContainer[float]
    policy_version: int
    policy_name: str
    decide_latency_us: int
    def __init__(self, request_id: _Optional[str] = ..., execute: _Optional[bool] = ..., task_id: _Optional[str] = ..., steps: _Optional[int] = ..., action: _Optional[_Iterable[float]] = ..., policy_version: _Optional[int] = ..., policy_name: _Optional[str] = ..., decide_latency_us: _Optional[int] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("version", "policy_name", "algorithm", "checkpoint_uri", "obs_spec_version", "loaded_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_URI_FIELD_NUMBER: _ClassVar[int]
    OBS_SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    policy_name: str
    algorithm: str
    checkpoint_uri: str
    obs_spec_version: int
    loaded_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[int] = ..., policy_name: _Optional[str] = ..., algorithm: _Optional[str] = ..., checkpoint_uri: _Optional[str] = ..., obs_spec_version: _Optional[int] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
