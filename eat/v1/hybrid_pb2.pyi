from eat.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeOutcomeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDGE_OUTCOME_KIND_UNSPECIFIED: _ClassVar[EdgeOutcomeKind]
    EDGE_OUTCOME_KIND_HANDED_OFF: _ClassVar[EdgeOutcomeKind]
    EDGE_OUTCOME_KIND_FINISHED: _ClassVar[EdgeOutcomeKind]
    EDGE_OUTCOME_KIND_FAILED: _ClassVar[EdgeOutcomeKind]

class PhasePlace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_PLACE_UNSPECIFIED: _ClassVar[PhasePlace]
    PHASE_PLACE_EDGE: _ClassVar[PhasePlace]
    PHASE_PLACE_DEVICE: _ClassVar[PhasePlace]
    PHASE_PLACE_NONE: _ClassVar[PhasePlace]
EDGE_OUTCOME_KIND_UNSPECIFIED: EdgeOutcomeKind
EDGE_OUTCOME_KIND_HANDED_OFF: EdgeOutcomeKind
EDGE_OUTCOME_KIND_FINISHED: EdgeOutcomeKind
EDGE_OUTCOME_KIND_FAILED: EdgeOutcomeKind
PHASE_PLACE_UNSPECIFIED: PhasePlace
PHASE_PLACE_EDGE: PhasePlace
PHASE_PLACE_DEVICE: PhasePlace
PHASE_PLACE_NONE: PhasePlace

class DeviceProfile(_message.Message):
    __slots__ = ("steps_per_s", "memory_gib")
    STEPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    steps_per_s: float
    memory_gib: float
    def __init__(self, steps_per_s: _Optional[float] = ..., memory_gib: _Optional[float] = ...) -> None: ...

class PersonalRequest(_message.Message):
    __slots__ = ("task_id", "user_id", "prompt", "seed", "steps", "device", "latency_weight", "reply_to")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    prompt: str
    seed: int
    steps: int
    device: DeviceProfile
    latency_weight: float
    reply_to: str
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., device: _Optional[_Union[DeviceProfile, _Mapping]] = ..., latency_weight: _Optional[float] = ..., reply_to: _Optional[str] = ...) -> None: ...

class EdgeMember(_message.Message):
    __slots__ = ("task_id", "user_id", "prompt", "seed")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    prompt: str
    seed: int
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., prompt: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class EdgeBatch(_message.Message):
    __slots__ = ("batch_id", "server_id", "steps", "split_step", "members", "adapter_user")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_STEP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_USER_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    server_id: str
    steps: int
    split_step: int
    members: _containers.RepeatedCompositeFieldContainer[EdgeMember]
    adapter_user: str
    def __init__(self, batch_id: _Optional[str] = ..., server_id: _Optional[str] = ..., steps: _Optional[int] = ..., split_step: _Optional[int] = ..., members: _Optional[_Iterable[_Union[EdgeMember, _Mapping]]] = ..., adapter_user: _Optional[str] = ...) -> None: ...

class LatentHandoff(_message.Message):
    __slots__ = ("task_id", "user_id", "prompt", "seed", "steps", "done_step", "latent", "shape", "edge_server_id", "edge_s", "report_by")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DONE_STEP_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    EDGE_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_S_FIELD_NUMBER: _ClassVar[int]
    REPORT_BY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    prompt: str
    seed: int
    steps: int
    done_step: int
    latent: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    edge_server_id: str
    edge_s: float
    report_by: float
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., done_step: _Optional[int] = ..., latent: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., edge_server_id: _Optional[str] = ..., edge_s: _Optional[float] = ..., report_by: _Optional[float] = ...) -> None: ...

class EdgeOutcome(_message.Message):
    __slots__ = ("task_id", "kind", "done_step", "image", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DONE_STEP_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: EdgeOutcomeKind
    done_step: int
    image: _common_pb2.ImageRef
    error: str
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[_Union[EdgeOutcomeKind, str]] = ..., done_step: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class EdgeReport(_message.Message):
    __slots__ = ("batch_id", "server_id", "outcomes", "edge_s", "adapter_user")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    EDGE_S_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_USER_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    server_id: str
    outcomes: _containers.RepeatedCompositeFieldContainer[EdgeOutcome]
    edge_s: float
    adapter_user: str
    def __init__(self, batch_id: _Optional[str] = ..., server_id: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[EdgeOutcome, _Mapping]]] = ..., edge_s: _Optional[float] = ..., adapter_user: _Optional[str] = ...) -> None: ...

class DeviceReport(_message.Message):
    __slots__ = ("task_id", "user_id", "device_id", "split_step", "steps", "image", "simulated", "error", "device_s")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_S_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    device_id: str
    split_step: int
    steps: int
    image: _common_pb2.ImageRef
    simulated: bool
    error: str
    device_s: float
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., split_step: _Optional[int] = ..., steps: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., simulated: _Optional[bool] = ..., error: _Optional[str] = ..., device_s: _Optional[float] = ...) -> None: ...

class DeviceHeartbeat(_message.Message):
    __slots__ = ("user_id", "device_id", "steps_per_s", "holding", "simulated")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    HOLDING_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: str
    steps_per_s: float
    holding: _containers.RepeatedScalarFieldContainer[str]
    simulated: bool
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., steps_per_s: _Optional[float] = ..., holding: _Optional[_Iterable[str]] = ..., simulated: _Optional[bool] = ...) -> None: ...

class HybridCompleted(_message.Message):
    __slots__ = ("task_id", "user_id", "steps", "planned_split", "split_step", "early", "late", "server_id", "device_id", "image", "simulated", "fell_back", "latency_s", "policy_name")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PLANNED_SPLIT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_STEP_FIELD_NUMBER: _ClassVar[int]
    EARLY_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    FELL_BACK_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    steps: int
    planned_split: int
    split_step: int
    early: PhasePlace
    late: PhasePlace
    server_id: str
    device_id: str
    image: _common_pb2.ImageRef
    simulated: bool
    fell_back: bool
    latency_s: float
    policy_name: str
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., steps: _Optional[int] = ..., planned_split: _Optional[int] = ..., split_step: _Optional[int] = ..., early: _Optional[_Union[PhasePlace, str]] = ..., late: _Optional[_Union[PhasePlace, str]] = ..., server_id: _Optional[str] = ..., device_id: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., simulated: _Optional[bool] = ..., fell_back: _Optional[bool] = ..., latency_s: _Optional[float] = ..., policy_name: _Optional[str] = ...) -> None: ...

class HybridFailed(_message.Message):
    __slots__ = ("task_id", "user_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
