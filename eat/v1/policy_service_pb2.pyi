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

class OffloadUser(_message.Message):
    __slots__ = ("user_id", "latency_weight", "device_steps_per_s")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STEPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    latency_weight: float
    device_steps_per_s: float
    def __init__(self, user_id: _Optional[str] = ..., latency_weight: _Optional[float] = ..., device_steps_per_s: _Optional[float] = ...) -> None: ...

class OffloadServer(_message.Message):
    __slots__ = ("server_id", "availability")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    availability: float
    def __init__(self, server_id: _Optional[str] = ..., availability: _Optional[float] = ...) -> None: ...

class OffloadRequest(_message.Message):
    __slots__ = ("request_id", "users", "servers", "steps", "policy_name", "max_batch")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    users: _containers.RepeatedCompositeFieldContainer[OffloadUser]
    servers: _containers.RepeatedCompositeFieldContainer[OffloadServer]
    steps: int
    policy_name: str
    max_batch: int
    def __init__(self, request_id: _Optional[str] = ..., users: _Optional[_Iterable[_Union[OffloadUser, _Mapping]]] = ..., servers: _Optional[_Iterable[_Union[OffloadServer, _Mapping]]] = ..., steps: _Optional[int] = ..., policy_name: _Optional[str] = ..., max_batch: _Optional[int] = ...) -> None: ...

class OffloadPlacement(_message.Message):
    __slots__ = ("user_id", "local", "edge")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    local: bool
    edge: EdgePlacement
    def __init__(self, user_id: _Optional[str] = ..., local: _Optional[bool] = ..., edge: _Optional[_Union[EdgePlacement, _Mapping]] = ...) -> None: ...

class EdgePlacement(_message.Message):
    __slots__ = ("server_id", "batch_index", "split_step")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    SPLIT_STEP_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    batch_index: int
    split_step: int
    def __init__(self, server_id: _Optional[str] = ..., batch_index: _Optional[int] = ..., split_step: _Optional[int] = ...) -> None: ...

class OffloadBatch(_message.Message):
    __slots__ = ("user_ids", "split_step")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_STEP_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    split_step: int
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., split_step: _Optional[int] = ...) -> None: ...

class ServerBatches(_message.Message):
    __slots__ = ("server_id", "batches")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    batches: _containers.RepeatedCompositeFieldContainer[OffloadBatch]
    def __init__(self, server_id: _Optional[str] = ..., batches: _Optional[_Iterable[_Union[OffloadBatch, _Mapping]]] = ...) -> None: ...

class OffloadPlan(_message.Message):
    __slots__ = ("request_id", "placements", "servers", "policy_name", "policy_version", "decide_latency_us", "decided_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECIDE_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    placements: _containers.RepeatedCompositeFieldContainer[OffloadPlacement]
    servers: _containers.RepeatedCompositeFieldContainer[ServerBatches]
    policy_name: str
    policy_version: str
    decide_latency_us: int
    decided_at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., placements: _Optional[_Iterable[_Union[OffloadPlacement, _Mapping]]] = ..., servers: _Optional[_Iterable[_Union[ServerBatches, _Mapping]]] = ..., policy_name: _Optional[str] = ..., policy_version: _Optional[str] = ..., decide_latency_us: _Optional[int] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
