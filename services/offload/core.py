"""The offload coordinator's rules, free of the bus, gRPC and protobuf: rounds of personal requests,
a plan turned into edge batches and step-0 handoffs, reports turned into terminal events, and the
fallback that finishes at the edge a request whose device went silent or missed its deadline.

Every accepted request ends in exactly one terminal effect (`Complete` or `Fail`); reports for a
request already finished or taken back are ignored, so a redelivered or late report never doubles it.
Each change of a request's track is listed (`take_dirty`) for the journal, and a restarted coordinator
`restore`s the tracks it journaled with their deadlines re-armed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from services.common.hybrid import (
    Completed,
    DeviceHeartbeat,
    DeviceReport,
    EdgeBatch,
    EdgeReport,
    Handoff,
    Member,
    OutcomeKind,
    PersonalRequest,
    Place,
)
from services.policy_server.offload_core import OffloadRound, OffloadServer, OffloadUser, RoundPlan

MAX_STEPS = 1000
LOCAL_FALLBACK_POLICY = "fallback:all-local"  # the plan when the policy server cannot decide


@dataclass(frozen=True)
class CoordinatorConfig:
    servers: tuple[str, ...]  # edge servers that hold the base model and every user's adapter
    availability: tuple[float, ...]  # each server's share this round, in (0, 1]
    round_size: int = 8  # a round closes at this many requests of one step count ...
    round_window_s: float = 1.0  # ... or when its oldest request has waited this long
    heartbeat_timeout_s: float = 5.0  # a device silent this long while holding a request has vanished
    report_slack: float = 2.0  # a device must report within slack x its expected time ...
    report_grace_s: float = 5.0  # ... plus this
    edge_timeout_s: float = 30.0  # an edge batch not reported by then fails its requests
    policy_name: str = ""  # offloading policy; empty = the policy server's default


class Stage(Enum):
    WAITING = "waiting"  # in an open round
    EDGE = "edge"  # in a planned edge batch
    DEVICE = "device"  # its handoff is on the way to, or at, the user's device
    FALLBACK = "fallback"  # taken back: a batch of one with the user's adapter at the edge
    DONE = "done"


@dataclass
class Track:
    request: PersonalRequest
    received_at: float
    stage: Stage = Stage.WAITING
    planned_split: int = 0
    policy_name: str = ""
    server_id: str = ""
    batch_id: str = ""
    handed_at: float = 0.0
    deadline: float = math.inf
    fell_back: bool = False


# ----- effects -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DispatchBatch:
    batch: EdgeBatch


@dataclass(frozen=True)
class SendHandoff:
    """A local placement: the whole request to the device, from the seeded noise."""

    handoff: Handoff


@dataclass(frozen=True)
class Complete:
    event: Completed
    reply_to: str


@dataclass(frozen=True)
class Fail:
    task_id: str
    user_id: str
    reason: str
    reply_to: str


Effect = DispatchBatch | SendHandoff | Complete | Fail


@dataclass(frozen=True)
class Round:
    """Requests of one step count decided together; users in the policy's round are the task ids
    (a user may have several requests in one round)."""

    round_id: str
    requests: tuple[PersonalRequest, ...]
    offload_round: OffloadRound


# ----- validation --------------------------------------------------------------------------------------
def request_problems(request: PersonalRequest) -> list[str]:
    """What makes a request unservable, each naming its field."""
    problems = []
    for name in ("task_id", "user_id"):
        value = getattr(request, name)
        if not value or not all(c.isalnum() or c in "-_." for c in value) or value in (".", ".."):
            problems.append(f"{name} must be a non-empty name of [A-Za-z0-9._-], got {value!r}")
    if not request.prompt.strip():
        problems.append("prompt is empty")
    if not 1 <= request.steps <= MAX_STEPS:
        problems.append(f"steps must be in 1..{MAX_STEPS}, got {request.steps}")
    if not (math.isfinite(request.steps_per_s) and request.steps_per_s > 0):
        problems.append(f"device.steps_per_s must be finite and > 0, got {request.steps_per_s}")
    if not (math.isfinite(request.memory_gib) and request.memory_gib >= 0):
        problems.append(f"device.memory_gib must be finite and >= 0, got {request.memory_gib}")
    if not (math.isfinite(request.latency_weight) and request.latency_weight >= 0):
        problems.append(f"latency_weight must be finite and >= 0, got {request.latency_weight}")
    return problems


def member_of(request: PersonalRequest) -> Member:
    return Member(request.task_id, request.user_id, request.prompt, request.seed)


# ----- the coordinator ---------------------------------------------------------------------------------
@dataclass
class Coordinator:
    config: CoordinatorConfig
    tracks: dict[str, Track] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)  # user -> latest device heartbeat
    rounds: int = 0
    # Prefix of round (and batch) ids: a restarted coordinator starts counting again, and its batches
    # must not take the ids of batches its predecessor sent.
    session: str = ""
    _fallbacks: int = 0
    _dirty: set[str] = field(default_factory=set)

    # ----- requests and rounds ---------------------------------------------------------------------
    def submit(self, request: PersonalRequest, now: float) -> bool:
        """Record a valid request; False for a task id already known (a redelivery: ignore it)."""
        if request.task_id in self.tracks:
            return False
        self.tracks[request.task_id] = Track(request, now)
        self._dirty.add(request.task_id)
        return True

    def restore(self, track: Track, now: float) -> None:
        """Take back a journaled, unfinished track after a restart. A request that was being decided
        waits for a round again; the devices and edge servers holding the others get a fresh
        heartbeat window and at least that long to report, since their reports may be waiting in the
        queue the new coordinator has yet to read."""
        if track.stage is Stage.EDGE and not track.batch_id:
            track.stage = Stage.WAITING
        if track.stage is not Stage.WAITING:
            track.deadline = max(track.deadline, now + self.config.heartbeat_timeout_s)
        if track.stage is Stage.DEVICE:
            self.last_seen[track.request.user_id] = now
        self.tracks[track.request.task_id] = track

    def take_round(self, now: float, *, flush: bool = False) -> Round | None:
        """The next round due: a step count with `round_size` requests waiting, or whose oldest request
        has waited `round_window_s` (any waiting request when `flush`)."""
        groups: dict[int, list[Track]] = {}
        for track in self.tracks.values():
            if track.stage is Stage.WAITING:
                groups.setdefault(track.request.steps, []).append(track)
        for steps, waiting in sorted(groups.items()):
            oldest = min(t.received_at for t in waiting)
            full = len(waiting) >= self.config.round_size
            if full or flush or now - oldest >= self.config.round_window_s:
                members = sorted(waiting, key=lambda t: t.received_at)[: self.config.round_size]
                return self._round([t.request for t in members], steps)
        return None

    def _round(self, requests: list[PersonalRequest], steps: int) -> Round:
        self.rounds += 1
        users = tuple(OffloadUser(r.task_id, r.latency_weight, r.steps_per_s) for r in requests)
        servers = tuple(
            OffloadServer(s, a) for s, a in zip(self.config.servers, self.config.availability, strict=True)
        )
        offload_round = OffloadRound(users, servers, steps, self.config.policy_name)
        for request in requests:
            self.tracks[request.task_id].stage = Stage.EDGE  # out of the open rounds until planned
        return Round(f"{self.session}r{self.rounds}", tuple(requests), offload_round)

    def apply_plan(self, plan_round: Round, plan: RoundPlan, policy_name: str, now: float) -> list[Effect]:
        """Edge batches in each server's order and step-0 handoffs for local placements."""
        by_task = {r.task_id: r for r in plan_round.requests}
        effects: list[Effect] = []
        for server in plan.servers:
            for index, planned in enumerate(server.batches):
                requests = [by_task[task_id] for task_id in planned.user_ids]
                batch_id = f"{plan_round.round_id}-{server.server_id}-b{index}"
                # A batch of one runs its user's own adapter on the edge (the plan's model prices it so).
                adapter = requests[0].user_id if len(requests) == 1 else ""
                batch = EdgeBatch(
                    batch_id,
                    server.server_id,
                    plan_round.offload_round.steps,
                    planned.split_step,
                    tuple(member_of(r) for r in requests),
                    adapter,
                )
                for request in requests:
                    self._to_edge(request.task_id, batch, policy_name, now)
                effects.append(DispatchBatch(batch))
        for placement in plan.placements:
            if placement.local:
                effects.append(self._to_device_at_start(by_task[placement.user_id], policy_name, now))
        return effects

    def plan_locally(self, plan_round: Round, now: float) -> list[Effect]:
        """No plan from the policy server: every device runs its whole request (no edge needed)."""
        return [self._to_device_at_start(r, LOCAL_FALLBACK_POLICY, now) for r in plan_round.requests]

    def _to_edge(self, task_id: str, batch: EdgeBatch, policy_name: str, now: float) -> None:
        track = self.tracks[task_id]
        self._dirty.add(task_id)
        track.stage, track.planned_split, track.policy_name = Stage.EDGE, batch.split_step, policy_name
        track.server_id, track.batch_id = batch.server_id, batch.batch_id
        track.deadline = now + self.config.edge_timeout_s

    def _to_device_at_start(self, request: PersonalRequest, policy_name: str, now: float) -> SendHandoff:
        track = self.tracks[request.task_id]
        track.planned_split, track.policy_name = 0, policy_name
        self._at_device(track, now)
        return SendHandoff(Handoff(member_of(request), request.steps, 0, None, report_by=track.deadline))

    def _at_device(self, track: Track, now: float, done_step: int = 0) -> None:
        request = track.request
        self._dirty.add(request.task_id)
        expected = (request.steps - done_step) / request.steps_per_s
        track.stage, track.handed_at = Stage.DEVICE, now
        track.deadline = now + self.config.report_slack * expected + self.config.report_grace_s

    # ----- reports ---------------------------------------------------------------------------------
    def on_edge_report(self, report: EdgeReport, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for outcome in report.outcomes:
            track = self.tracks.get(outcome.task_id)
            if track is None or track.batch_id != report.batch_id:
                continue  # not this batch's (any more): a duplicate or a stale report
            if track.stage not in (Stage.EDGE, Stage.FALLBACK):
                continue
            if outcome.kind is OutcomeKind.HANDED_OFF:
                self._at_device(track, now, outcome.done_step)
            elif outcome.kind is OutcomeKind.FINISHED:
                effects.append(self._complete_at_edge(track, report, outcome.image, now))
            else:
                effects.append(self._fail(track, f"edge server {report.server_id}: {outcome.error}"))
        return effects

    def _complete_at_edge(self, track: Track, report: EdgeReport, image: object, now: float) -> Complete:
        request = track.request
        event = Completed(
            task_id=request.task_id,
            user_id=request.user_id,
            steps=request.steps,
            planned_split=track.planned_split,
            split_step=request.steps,
            early=Place.EDGE,
            late=Place.NONE,
            server_id=report.server_id,
            device_id="",
            image=image,  # type: ignore[arg-type]
            simulated=False,
            fell_back=track.fell_back,
            latency_s=now - track.received_at,
            policy_name=track.policy_name,
        )
        return self._done(track, event)

    def on_device_report(self, report: DeviceReport, now: float) -> list[Effect]:
        track = self.tracks.get(report.task_id)
        if track is None or track.stage is not Stage.DEVICE or report.user_id != track.request.user_id:
            return []  # finished, taken back, or never ours: ignored, never doubled
        if report.error:
            return self._fall_back(track, f"device {report.device_id} failed: {report.error}", now)
        request = track.request
        edge_phase = report.split_step > 0
        event = Completed(
            task_id=request.task_id,
            user_id=request.user_id,
            steps=request.steps,
            planned_split=track.planned_split,
            split_step=report.split_step,
            early=Place.EDGE if edge_phase else Place.NONE,
            late=Place.DEVICE,
            server_id=track.server_id if edge_phase else "",
            device_id=report.device_id,
            image=report.image,
            simulated=report.simulated,
            fell_back=False,
            latency_s=now - track.received_at,
            policy_name=track.policy_name,
        )
        return [self._done(track, event)]

    def on_heartbeat(self, beat: DeviceHeartbeat, now: float) -> None:
        self.last_seen[beat.user_id] = now

    def known(self, task_id: str) -> bool:
        return task_id in self.tracks

    # ----- time ------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        """Take back requests of vanished or late devices; fail edge batches past their deadline."""
        effects: list[Effect] = []
        for track in list(self.tracks.values()):
            if track.stage is Stage.DEVICE:
                reason = self._device_trouble(track, now)
                if reason:
                    effects.extend(self._fall_back(track, reason, now))
            elif track.stage in (Stage.EDGE, Stage.FALLBACK) and now > track.deadline:
                where, timeout = track.server_id or "the edge", self.config.edge_timeout_s
                reason = f"{where} did not report batch {track.batch_id} in {timeout} s"
                effects.append(self._fail(track, reason))
        return effects

    def _device_trouble(self, track: Track, now: float) -> str:
        user = track.request.user_id
        # A device never heard from is judged from the moment its request was handed over.
        heard = max(self.last_seen.get(user, -math.inf), track.handed_at)
        if now - heard > self.config.heartbeat_timeout_s:
            return f"the device of {user} sent no heartbeat for {now - heard:.1f} s"
        if now > track.deadline:
            allowed = track.deadline - track.handed_at
            return f"the device of {user} did not report by its deadline ({allowed:.1f} s)"
        return ""

    def _fall_back(self, track: Track, reason: str, now: float) -> list[Effect]:
        """Finish the request at the edge with the user's adapter, or fail it saying why not."""
        if track.fell_back or not self.config.servers:
            why = "it was already taken back once" if track.fell_back else "no edge server is configured"
            return [self._fail(track, f"{reason}; cannot finish at the edge: {why}")]
        request = track.request
        server = self.config.servers[self._fallbacks % len(self.config.servers)]
        self._fallbacks += 1
        batch = EdgeBatch(
            f"{request.task_id}-fallback",
            server,
            request.steps,
            request.steps,
            (member_of(request),),
            request.user_id,
        )
        track.stage, track.fell_back = Stage.FALLBACK, True
        self._dirty.add(request.task_id)
        track.server_id, track.batch_id = server, batch.batch_id
        track.deadline = now + self.config.edge_timeout_s
        return [DispatchBatch(batch)]

    # ----- terminal --------------------------------------------------------------------------------
    def _done(self, track: Track, event: Completed) -> Complete:
        track.stage, track.deadline = Stage.DONE, math.inf
        self._dirty.add(track.request.task_id)
        return Complete(event, track.request.reply_to)

    def _fail(self, track: Track, reason: str) -> Fail:
        track.stage, track.deadline = Stage.DONE, math.inf
        self._dirty.add(track.request.task_id)
        request = track.request
        return Fail(request.task_id, request.user_id, reason, request.reply_to)

    def open_tasks(self) -> Iterator[Track]:
        return (t for t in self.tracks.values() if t.stage is not Stage.DONE)

    def take_dirty(self) -> list[Track]:
        """The tracks changed since the last call, for the journal. A finished track leaves memory
        here: from now on the journal holds it (and answers a duplicate of its request)."""
        dirty = [self.tracks[t] for t in sorted(self._dirty) if t in self.tracks]
        self._dirty.clear()
        for track in dirty:
            if track.stage is Stage.DONE:
                del self.tracks[track.request.task_id]
        return dirty


def splits_of(effects: Sequence[Effect]) -> dict[str, int]:
    """task id -> split of the edge batches and handoffs among `effects` (reports and tests)."""
    out: dict[str, int] = {}
    for effect in effects:
        if isinstance(effect, DispatchBatch):
            out.update({m.task_id: effect.batch.split_step for m in effect.batch.members})
        elif isinstance(effect, SendHandoff):
            out[effect.handoff.member.task_id] = 0
    return out
