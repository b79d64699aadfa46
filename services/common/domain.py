"""Domain types the services share (protobuf stops at `convert`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policy_models.obs import OBS_SPEC_VERSION

if TYPE_CHECKING:  # an annotation only: executors importing this module need not load the live policy code
    from policy_models.live import Snapshot


@dataclass(frozen=True)
class QosSpec:
    min_quality: float = 0.0
    deadline_s: float = 0.0  # relative to submitted_at; 0 = none
    priority: int = 0
    max_steps: int | None = None
    min_steps: int | None = None


@dataclass(frozen=True)
class Task:
    """An accepted task: the validated submission and when it was accepted (epoch seconds)."""

    task_id: str
    prompt: str
    model: str
    patches: int
    qos: QosSpec = field(default_factory=QosSpec)
    submitted_at: float = 0.0
    accepted_at: float = 0.0
    seed: int | None = None
    reply_to: str = ""
    correlation_id: str = ""

    @property
    def deadline_at(self) -> float | None:
        """Epoch seconds after which the task fails (None = no deadline)."""
        return self.submitted_at + self.qos.deadline_s if self.qos.deadline_s > 0 else None


class ExecState(enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    DOWN = "down"


class Reason(enum.Enum):
    """Failure causes (mirror eat.v1.FailureReason; converted at the edge)."""

    DEADLINE_EXCEEDED = 1
    GANG_MEMBER_LOST = 2
    RENDEZVOUS_FAILED = 3
    MODEL_LOAD_FAILED = 4
    OUT_OF_MEMORY = 5
    EXECUTOR_ERROR = 6
    EVALUATION_FAILED = 7
    RETRIES_EXHAUSTED = 8
    NO_CAPACITY = 9
    CANCELLED = 10
    INTERNAL = 11
    EXECUTOR_BUSY = 12


@dataclass(frozen=True)
class ExecutorReport:
    """An ExecutorStatus (or, with `heartbeat_only`, an ExecutorHeartbeat) in domain form."""

    executor_id: str
    incarnation: str
    sequence: int
    state: ExecState = ExecState.IDLE
    current_task_id: str = ""
    current_attempt: int = 0
    remaining_s: float = 0.0
    resident_models: tuple[str, ...] = ()
    max_resident_models: int = 0
    speed: float = 1.0
    host: str = ""
    heartbeat_only: bool = False
    sent_at: float = 0.0  # epoch seconds the executor sent it (0 = unknown)


@dataclass(frozen=True)
class ImageInfo:
    uri: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    size_bytes: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class AttemptResult:
    """A TaskResult in domain form (times in model seconds, as the executors measure them)."""

    task_id: str
    attempt: int
    success: bool
    reason: Reason | None = None
    message: str = ""
    image: ImageInfo | None = None
    init_s: float = 0.0  # load + group setup
    run_s: float = 0.0  # denoise + decode
    reused: bool = False
    simulated: bool = False
    seed: int = 0


@dataclass(frozen=True)
class QualityResult:
    task_id: str
    attempt: int
    clip_score: float
    simulated: bool
    error: str = ""


@dataclass(frozen=True)
class Transition:
    """One live transition (the domain twin of eat.v1.Experience), as the trainer learns from it.

    It lives here rather than in the trainer's core so that `services.common.convert` can build it
    without importing the trainer (and torch with it) into every service."""

    episode_id: str
    step_index: int
    observation: Snapshot
    action: tuple[float, ...]
    reward: float
    next_observation: Snapshot
    done: bool = False
    truncated: bool = False
    obs_spec_version: int = OBS_SPEC_VERSION
    policy_version: int = 0
    source: str = "live"
