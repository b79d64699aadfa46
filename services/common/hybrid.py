"""Hybrid execution's messages as plain data, and their protobuf conversions (eat.v1 hybrid.proto).

The coordinator, the edge worker and the devices work on these dataclasses; protobuf is built and read
only here, where messages enter and leave a process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from eat.v1 import hybrid_pb2
from services.common.convert import image_info, image_ref
from services.common.domain import ImageInfo

LATENT_DTYPE = np.dtype("<f4")  # little-endian float32 on the wire, whatever the host's order


@dataclass(frozen=True)
class PersonalRequest:
    task_id: str
    user_id: str
    prompt: str
    seed: int
    steps: int
    steps_per_s: float
    memory_gib: float
    latency_weight: float
    reply_to: str = ""


@dataclass(frozen=True)
class Member:
    """One request of an edge batch."""

    task_id: str
    user_id: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class EdgeBatch:
    """Members stepping together on one edge server for steps [0, split_step) of `steps`; with an
    adapter user, a batch of one of that user running with the user's adapter applied."""

    batch_id: str
    server_id: str
    steps: int
    split_step: int
    members: tuple[Member, ...]
    adapter_user: str = ""

    @property
    def finishes(self) -> bool:
        """True when the edge runs every step and stores the image itself."""
        return self.split_step == self.steps


@dataclass(frozen=True)
class Handoff:
    """A request's latent after `done_step` steps, for its user's device; `latent` None at step 0."""

    member: Member
    steps: int
    done_step: int
    latent: np.ndarray | None
    edge_server_id: str = ""
    edge_s: float = 0.0
    report_by: float = 0.0


class OutcomeKind(Enum):
    HANDED_OFF = hybrid_pb2.EDGE_OUTCOME_KIND_HANDED_OFF
    FINISHED = hybrid_pb2.EDGE_OUTCOME_KIND_FINISHED
    FAILED = hybrid_pb2.EDGE_OUTCOME_KIND_FAILED


@dataclass(frozen=True)
class EdgeOutcome:
    task_id: str
    kind: OutcomeKind
    done_step: int
    image: ImageInfo | None = None
    error: str = ""


@dataclass(frozen=True)
class EdgeReport:
    batch_id: str
    server_id: str
    outcomes: tuple[EdgeOutcome, ...]
    edge_s: float
    adapter_user: str = ""


@dataclass(frozen=True)
class DeviceReport:
    task_id: str
    user_id: str
    device_id: str
    split_step: int
    steps: int
    image: ImageInfo | None
    simulated: bool
    error: str
    device_s: float


@dataclass(frozen=True)
class DeviceHeartbeat:
    user_id: str
    device_id: str
    steps_per_s: float
    holding: tuple[str, ...]
    simulated: bool


class Place(Enum):
    EDGE = hybrid_pb2.PHASE_PLACE_EDGE
    DEVICE = hybrid_pb2.PHASE_PLACE_DEVICE
    NONE = hybrid_pb2.PHASE_PLACE_NONE


@dataclass(frozen=True)
class Completed:
    task_id: str
    user_id: str
    steps: int
    planned_split: int
    split_step: int
    early: Place
    late: Place
    server_id: str
    device_id: str
    image: ImageInfo | None
    simulated: bool
    fell_back: bool
    latency_s: float
    policy_name: str


# ----- requests ----------------------------------------------------------------------------------------
def request_from_proto(message: hybrid_pb2.PersonalRequest) -> PersonalRequest:
    return PersonalRequest(
        task_id=message.task_id,
        user_id=message.user_id,
        prompt=message.prompt,
        seed=message.seed,
        steps=message.steps,
        steps_per_s=message.device.steps_per_s,
        memory_gib=message.device.memory_gib,
        latency_weight=message.latency_weight,
        reply_to=message.reply_to,
    )


def request_to_proto(request: PersonalRequest) -> hybrid_pb2.PersonalRequest:
    return hybrid_pb2.PersonalRequest(
        task_id=request.task_id,
        user_id=request.user_id,
        prompt=request.prompt,
        seed=request.seed,
        steps=request.steps,
        device=hybrid_pb2.DeviceProfile(steps_per_s=request.steps_per_s, memory_gib=request.memory_gib),
        latency_weight=request.latency_weight,
        reply_to=request.reply_to,
    )


# ----- edge batches ------------------------------------------------------------------------------------
def _member_to_proto(member: Member) -> hybrid_pb2.EdgeMember:
    return hybrid_pb2.EdgeMember(
        task_id=member.task_id, user_id=member.user_id, prompt=member.prompt, seed=member.seed
    )


def _member_from_proto(message: hybrid_pb2.EdgeMember) -> Member:
    return Member(message.task_id, message.user_id, message.prompt, message.seed)


def batch_to_proto(batch: EdgeBatch) -> hybrid_pb2.EdgeBatch:
    return hybrid_pb2.EdgeBatch(
        batch_id=batch.batch_id,
        server_id=batch.server_id,
        steps=batch.steps,
        split_step=batch.split_step,
        members=[_member_to_proto(m) for m in batch.members],
        adapter_user=batch.adapter_user,
    )


def batch_from_proto(message: hybrid_pb2.EdgeBatch) -> EdgeBatch:
    return EdgeBatch(
        batch_id=message.batch_id,
        server_id=message.server_id,
        steps=message.steps,
        split_step=message.split_step,
        members=tuple(_member_from_proto(m) for m in message.members),
        adapter_user=message.adapter_user,
    )


# ----- handoffs ----------------------------------------------------------------------------------------
class BadLatent(ValueError):
    """Latent bytes that do not make an array of the stated shape."""


def latent_bytes(latent: np.ndarray) -> bytes:
    return np.ascontiguousarray(latent, dtype=LATENT_DTYPE).tobytes()


def latent_from_bytes(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    expected = int(np.prod(shape)) * LATENT_DTYPE.itemsize if shape else 0
    if not shape or len(data) != expected:
        raise BadLatent(f"{len(data)} latent bytes do not fill shape {list(shape)} of float32")
    array = np.frombuffer(data, dtype=LATENT_DTYPE).reshape(shape)
    if not np.isfinite(array).all():
        raise BadLatent("the latent holds NaN or infinite values")
    return array.astype(np.float32)


def handoff_to_proto(handoff: Handoff) -> hybrid_pb2.LatentHandoff:
    member = handoff.member
    message = hybrid_pb2.LatentHandoff(
        task_id=member.task_id,
        user_id=member.user_id,
        prompt=member.prompt,
        seed=member.seed,
        steps=handoff.steps,
        done_step=handoff.done_step,
        edge_server_id=handoff.edge_server_id,
        edge_s=handoff.edge_s,
        report_by=handoff.report_by,
    )
    if handoff.latent is not None:
        message.latent = latent_bytes(handoff.latent)
        message.shape.extend(handoff.latent.shape)
    return message


def handoff_from_proto(message: hybrid_pb2.LatentHandoff) -> Handoff:
    """Raises BadLatent for a latent that is missing, malformed or present at step 0."""
    if message.done_step == 0 and (message.latent or message.shape):
        raise BadLatent("a handoff at step 0 carries no latent")
    latent = None if message.done_step == 0 else latent_from_bytes(message.latent, tuple(message.shape))
    return Handoff(
        member=Member(message.task_id, message.user_id, message.prompt, message.seed),
        steps=message.steps,
        done_step=message.done_step,
        latent=latent,
        edge_server_id=message.edge_server_id,
        edge_s=message.edge_s,
        report_by=message.report_by,
    )


# ----- reports -----------------------------------------------------------------------------------------
def _image_or_none(has: bool, message: object) -> ImageInfo | None:
    return image_info(message) if has else None  # type: ignore[arg-type]


def edge_report_to_proto(report: EdgeReport) -> hybrid_pb2.EdgeReport:
    outcomes = []
    for outcome in report.outcomes:
        item = hybrid_pb2.EdgeOutcome(
            task_id=outcome.task_id, kind=outcome.kind.value, done_step=outcome.done_step, error=outcome.error
        )
        if outcome.image is not None:
            item.image.CopyFrom(image_ref(outcome.image))
        outcomes.append(item)
    return hybrid_pb2.EdgeReport(
        batch_id=report.batch_id,
        server_id=report.server_id,
        outcomes=outcomes,
        edge_s=report.edge_s,
        adapter_user=report.adapter_user,
    )


def edge_report_from_proto(message: hybrid_pb2.EdgeReport) -> EdgeReport:
    """Raises ValueError for an outcome of no known kind."""
    outcomes = []
    for item in message.outcomes:
        if item.kind not in {k.value for k in OutcomeKind}:
            raise ValueError(f"outcome of {item.task_id!r} has no known kind ({item.kind})")
        outcomes.append(
            EdgeOutcome(
                task_id=item.task_id,
                kind=OutcomeKind(item.kind),
                done_step=item.done_step,
                image=_image_or_none(item.HasField("image"), item.image),
                error=item.error,
            )
        )
    return EdgeReport(
        message.batch_id, message.server_id, tuple(outcomes), message.edge_s, message.adapter_user
    )


def device_report_to_proto(report: DeviceReport) -> hybrid_pb2.DeviceReport:
    message = hybrid_pb2.DeviceReport(
        task_id=report.task_id,
        user_id=report.user_id,
        device_id=report.device_id,
        split_step=report.split_step,
        steps=report.steps,
        simulated=report.simulated,
        error=report.error,
        device_s=report.device_s,
    )
    if report.image is not None:
        message.image.CopyFrom(image_ref(report.image))
    return message


def device_report_from_proto(message: hybrid_pb2.DeviceReport) -> DeviceReport:
    return DeviceReport(
        task_id=message.task_id,
        user_id=message.user_id,
        device_id=message.device_id,
        split_step=message.split_step,
        steps=message.steps,
        image=_image_or_none(message.HasField("image"), message.image),
        simulated=message.simulated,
        error=message.error,
        device_s=message.device_s,
    )


def heartbeat_to_proto(beat: DeviceHeartbeat) -> hybrid_pb2.DeviceHeartbeat:
    return hybrid_pb2.DeviceHeartbeat(
        user_id=beat.user_id,
        device_id=beat.device_id,
        steps_per_s=beat.steps_per_s,
        holding=list(beat.holding),
        simulated=beat.simulated,
    )


def heartbeat_from_proto(message: hybrid_pb2.DeviceHeartbeat) -> DeviceHeartbeat:
    return DeviceHeartbeat(
        message.user_id, message.device_id, message.steps_per_s, tuple(message.holding), message.simulated
    )


# ----- terminal events ---------------------------------------------------------------------------------
def completed_to_proto(event: Completed) -> hybrid_pb2.HybridCompleted:
    message = hybrid_pb2.HybridCompleted(
        task_id=event.task_id,
        user_id=event.user_id,
        steps=event.steps,
        planned_split=event.planned_split,
        split_step=event.split_step,
        early=event.early.value,
        late=event.late.value,
        server_id=event.server_id,
        device_id=event.device_id,
        simulated=event.simulated,
        fell_back=event.fell_back,
        latency_s=event.latency_s,
        policy_name=event.policy_name,
    )
    if event.image is not None:
        message.image.CopyFrom(image_ref(event.image))
    return message
