import datetime

from eat.v1 import cluster_pb2 as _cluster_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Experience(_message.Message):
    __slots__ = ("episode_id", "step_index", "observation", "action", "reward", "next_observation", "done", "truncated", "policy_version", "obs_spec_version", "executed", "task_id", "steps", "source", "created_at")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBS_SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    step_index: int
    observation: _cluster_pb2.ClusterSnapshot
    action: _containers.RepeatedScalarFieldContainer[float]
    reward: float
    next_observation: _cluster_pb2.ClusterSnapshot
    done: bool
    truncated: bool
    policy_version: int
    obs_spec_version: int
    executed: bool
    task_id: str
    steps: int
    source: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, episode_id: _Optional[str] = ..., step_index: _Optional[int] = ..., observation: _Optional[_Union[_cluster_pb2.ClusterSnapshot, _Mapping]] = ..., action: _Optional[_Iterable[float]] = ..., reward: _Optional[float] = ..., next_observation: _Optional[_Union[_cluster_pb2.ClusterSnapshot, _Mapping]] = ..., done: _Optional[bool] = ..., truncated: _Optional[bool] = ..., policy_version: _Optional[int] = ..., obs_spec_version: _Optional[int] = ..., executed: _Optional[bool] = ..., task_id: _Optional[str] = ..., steps: _Optional[int] = ..., source: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EvaluationSummary(_message.Message):
    __slots__ = ("candidate_utility", "serving_utility", "diff_ci95", "serving_version", "episodes", "seeds", "settings")
    CANDIDATE_UTILITY_FIELD_NUMBER: _ClassVar[int]
    SERVING_UTILITY_FIELD_NUMBER: _ClassVar[int]
    DIFF_CI95_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    candidate_utility: float
    serving_utility: float
    diff_ci95: float
    serving_version: int
    episodes: int
    seeds: _containers.RepeatedScalarFieldContainer[int]
    settings: str
    def __init__(self, candidate_utility: _Optional[float] = ..., serving_utility: _Optional[float] = ..., diff_ci95: _Optional[float] = ..., serving_version: _Optional[int] = ..., episodes: _Optional[int] = ..., seeds: _Optional[_Iterable[int]] = ..., settings: _Optional[str] = ...) -> None: ...

class PolicyUpdated(_message.Message):
    __slots__ = ("version", "checkpoint_uri", "algorithm", "evaluation", "created_at", "obs_spec_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_URI_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OBS_SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    checkpoint_uri: str
    algorithm: str
    evaluation: EvaluationSummary
    created_at: _timestamp_pb2.Timestamp
    obs_spec_version: int
    def __init__(self, version: _Optional[int] = ..., checkpoint_uri: _Optional[str] = ..., algorithm: _Optional[str] = ..., evaluation: _Optional[_Union[EvaluationSummary, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., obs_spec_version: _Optional[int] = ...) -> None: ...
