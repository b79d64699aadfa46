"""Offloading rounds and plans between protobuf (eat.v1.OffloadRequest / OffloadPlan) and the plain
data of `offload_core`: protobuf types stop here, on both the server's and the client's side."""

from __future__ import annotations

from eat.v1 import policy_service_pb2 as pb
from services.common.convert import timestamp
from services.policy_server.offload_core import (
    OffloadDecision,
    OffloadRound,
    OffloadServer,
    OffloadUser,
    Placement,
    PlannedBatch,
    RoundPlan,
    ServerPlan,
)


def round_to_proto(offload_round: OffloadRound, request_id: str = "") -> pb.OffloadRequest:
    return pb.OffloadRequest(
        request_id=request_id,
        users=[
            pb.OffloadUser(
                user_id=u.user_id, latency_weight=u.latency_weight, device_steps_per_s=u.device_steps_per_s
            )
            for u in offload_round.users
        ],
        servers=[
            pb.OffloadServer(server_id=s.server_id, availability=s.availability)
            for s in offload_round.servers
        ],
        steps=offload_round.steps,
        policy_name=offload_round.policy_name,
        max_batch=offload_round.max_batch,
    )


def round_from_proto(message: pb.OffloadRequest) -> OffloadRound:
    """The round as sent; `OffloadPlanner.check` says whether it can be decided."""
    return OffloadRound(
        users=tuple(OffloadUser(u.user_id, u.latency_weight, u.device_steps_per_s) for u in message.users),
        servers=tuple(OffloadServer(s.server_id, s.availability) for s in message.servers),
        steps=message.steps,
        policy_name=message.policy_name,
        max_batch=message.max_batch,
    )


def plan_to_proto(decision: OffloadDecision, request_id: str, decide_latency_us: int) -> pb.OffloadPlan:
    plan = decision.plan
    return pb.OffloadPlan(
        request_id=request_id,
        placements=[_placement_to_proto(p) for p in plan.placements],
        servers=[
            pb.ServerBatches(
                server_id=s.server_id,
                batches=[pb.OffloadBatch(user_ids=b.user_ids, split_step=b.split_step) for b in s.batches],
            )
            for s in plan.servers
        ],
        policy_name=decision.policy_name,
        policy_version=decision.policy_version,
        decide_latency_us=decide_latency_us,
        decided_at=timestamp(decision.decided_at),
    )


def plan_from_proto(message: pb.OffloadPlan) -> RoundPlan:
    return RoundPlan(
        placements=tuple(_placement_from_proto(p) for p in message.placements),
        servers=tuple(
            ServerPlan(s.server_id, tuple(PlannedBatch(tuple(b.user_ids), b.split_step) for b in s.batches))
            for s in message.servers
        ),
    )


def _placement_to_proto(placement: Placement) -> pb.OffloadPlacement:
    if placement.local:
        return pb.OffloadPlacement(user_id=placement.user_id, local=True)
    edge = pb.EdgePlacement(
        server_id=placement.server_id, batch_index=placement.batch_index, split_step=placement.split_step
    )
    return pb.OffloadPlacement(user_id=placement.user_id, edge=edge)


def _placement_from_proto(message: pb.OffloadPlacement) -> Placement:
    if message.WhichOneof("place") != "edge":
        return Placement(message.user_id)
    edge = message.edge
    return Placement(message.user_id, edge.server_id, edge.batch_index, edge.split_step)
