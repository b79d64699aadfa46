"""DecideOffload end to end on real servers: served plans are the offloading policies' own, every user
is placed once within the batch limit, bad rounds are refused naming the field, and the weights are
read once at start."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from eat.v1 import policy_service_pb2 as pb
from eat.v1 import policy_service_pb2_grpc
from policy_models.offload import policies as offload_policies
from policy_models.offload.model import (
    Assignment,
    Instance,
    default_curve,
    make_instance,
    shipped_measurement,
    validate,
)
from policy_models.offload.policies import NETWORK_POLICIES, POLICY_NAMES, make_policy
from services.policy_server import offload_core
from services.policy_server.client import PolicyClient, PolicyUnavailable
from services.policy_server.offload import plan_from_proto, plan_to_proto, round_from_proto, round_to_proto
from services.policy_server.offload_core import (
    OffloadDecision,
    OffloadPlanner,
    OffloadRound,
    RoundPlan,
    accuracy_for_steps,
    plan_of,
)
from services.policy_server.server import RunningServer, start_in_thread
from tests.services.policy_server.conftest import settings

StartServer = Callable[..., RunningServer]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One server for the tests that only read (the default offloading policy: drl-convex)."""
    running = start_in_thread(settings())
    yield running
    running.stop()


def round_of(seed: int, n_users: int, n_servers: int, **changes: object) -> tuple[Instance, OffloadRound]:
    instance = make_instance(seed, n_users, n_servers)
    return instance, dataclasses.replace(OffloadRound.from_instance(instance), **changes)


def decide(server: RunningServer, request: pb.OffloadRequest) -> pb.OffloadPlan:
    with grpc.insecure_channel(server.target) as channel:
        return policy_service_pb2_grpc.PolicyServiceStub(channel).DecideOffload(request, timeout=30)


def refusal(server: RunningServer, request: pb.OffloadRequest) -> str:
    """The details of the INVALID_ARGUMENT the request gets."""
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        policy_service_pb2_grpc.PolicyServiceStub(channel).DecideOffload(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details()


def assert_well_formed(plan: RoundPlan, offload_round: OffloadRound, max_batch: int) -> None:
    """Every user placed exactly once, placements agreeing with the batches, batches within limits."""
    assert [p.user_id for p in plan.placements] == [u.user_id for u in offload_round.users]
    assert [s.server_id for s in plan.servers] == [s.server_id for s in offload_round.servers]
    batched = [u for s in plan.servers for b in s.batches for u in b.user_ids]
    local = [p.user_id for p in plan.placements if p.local]
    assert sorted(batched + local) == sorted(u.user_id for u in offload_round.users)
    for server_plan in plan.servers:
        for m, batch in enumerate(server_plan.batches):
            assert 1 <= len(batch.user_ids) <= max_batch
            assert 1 <= batch.split_step <= offload_round.steps
            for user_id in batch.user_ids:
                placement = plan.placements[[p.user_id for p in plan.placements].index(user_id)]
                assert (placement.server_id, placement.batch_index, placement.split_step) == (
                    server_plan.server_id,
                    m,
                    batch.split_step,
                )


def test_decide_offload_is_a_method_of_the_policy_service() -> None:
    service = pb.DESCRIPTOR.services_by_name["PolicyService"]
    method = service.methods_by_name["DecideOffload"]
    assert (method.input_type.full_name, method.output_type.full_name) == (
        "eat.v1.OffloadRequest",
        "eat.v1.OffloadPlan",
    )


# ----- served plans are the policies' own -------------------------------------------------------------
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_the_served_plan_is_the_policys_own_solution(server: RunningServer, name: str) -> None:
    n_users, n_servers = (6, 2) if name == "optimal" else (12, 3)
    instance, offload_round = round_of(11, n_users, n_servers, policy_name=name)
    reply = decide(server, round_to_proto(offload_round, request_id=f"round-{name}"))
    expected = make_policy(name).solve(instance)
    assert plan_from_proto(reply) == plan_of(offload_round, expected)
    assert plan_from_proto(reply).to_assignment(offload_round) == expected
    assert (reply.request_id, reply.policy_name) == (f"round-{name}", name)
    assert reply.policy_version.startswith("sha256:") == (name in NETWORK_POLICIES)
    assert reply.decide_latency_us > 0 and abs(reply.decided_at.seconds - time.time()) < 60


def test_a_round_naming_no_policy_gets_the_configured_default(start_server: StartServer) -> None:
    instance, offload_round = round_of(3, 16, 2)
    default = decide(start_server(), round_to_proto(offload_round))
    assert default.policy_name == "drl-convex"
    assert plan_from_proto(default) == plan_of(offload_round, make_policy("drl-convex").solve(instance))
    assert (
        decide(start_server(offload_policy="greedy"), round_to_proto(offload_round)).policy_name == "greedy"
    )


def test_local_and_offloaded_users_are_told_apart_on_the_wire(server: RunningServer) -> None:
    _, offload_round = round_of(5, 12, 2, policy_name="greedy-social")
    reply = decide(server, round_to_proto(offload_round))
    places = {p.user_id: p.WhichOneof("place") for p in reply.placements}
    plan = plan_from_proto(reply)
    assert all(places[p.user_id] == ("local" if p.local else "edge") for p in plan.placements)
    assert {"local", "edge"} <= set(places.values()), "the round should have both kinds"


# ----- placement and limits ---------------------------------------------------------------------------
def test_every_user_is_placed_once_and_the_batch_limit_holds(server: RunningServer) -> None:
    instance, offload_round = round_of(7, 32, 4)
    with PolicyClient(server.target, timeout_s=10.0) as client:
        plan = client.decide_offload(offload_round).plan
        assert_well_formed(plan, offload_round, instance.max_batch)
        validate(instance, plan.to_assignment(offload_round))
        tight_plans = {}
        for name in ("fixed-third", "greedy-social", "drl-convex"):
            tight = dataclasses.replace(offload_round, max_batch=3, policy_name=name)
            tight_plans[name] = client.decide_offload(tight).plan
            assert_well_formed(tight_plans[name], tight, 3)
            expected = make_policy(name).solve(dataclasses.replace(instance, max_batch=3))
            assert tight_plans[name] == plan_of(tight, expected), name
    # fixed-third fills its batches, so there the limit binds (the others choose smaller ones here).
    assert {len(b.user_ids) for s in tight_plans["fixed-third"].servers for b in s.batches} == {2, 3}


def test_a_round_of_32_users_and_4_servers_is_decided(server: RunningServer) -> None:
    _, offload_round = round_of(2024, 32, 4)
    with PolicyClient(server.target, timeout_s=10.0) as client:
        reply = client.decide_offload(offload_round, request_id="big")
    assert reply.policy_name == "drl-convex" and reply.policy_version.startswith("sha256:")
    assert 0 < reply.server_latency_us < 10e6 and abs(reply.decided_at - time.time()) < 60
    assert_well_formed(reply.plan, offload_round, 8)


def test_rounds_decided_at_once_get_the_plans_they_get_alone(server: RunningServer) -> None:
    """Rounds run in worker threads: overlapping ones must not see each other's state."""
    rounds = [round_of(seed, 16, 2, policy_name=POLICY_NAMES[seed % 2]) for seed in range(8)]
    with PolicyClient(server.target, timeout_s=30.0) as client, ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda pair: client.decide_offload(pair[1]), rounds))
    for (instance, offload_round), reply in zip(rounds, replies, strict=True):
        assert reply.plan == plan_of(offload_round, make_policy(offload_round.policy_name).solve(instance))


def test_a_step_count_other_than_the_measured_one_is_decided(server: RunningServer) -> None:
    _, offload_round = round_of(9, 16, 2, steps=50)
    plan = plan_from_proto(decide(server, round_to_proto(offload_round)))
    assert_well_formed(plan, offload_round, 8)


# ----- refusals ---------------------------------------------------------------------------------------
def valid_request() -> pb.OffloadRequest:
    return round_to_proto(round_of(1, 4, 2)[1])


def _edit(change: Callable[[pb.OffloadRequest], object]) -> pb.OffloadRequest:
    request = valid_request()
    change(request)
    return request


BAD_REQUESTS: dict[str, tuple[Callable[[pb.OffloadRequest], object], str]] = {
    "no users": (lambda r: r.ClearField("users"), "users: a round needs at least one"),
    "no servers": (lambda r: r.ClearField("servers"), "servers: a round needs at least one"),
    "zero speed": (lambda r: setattr(r.users[1], "device_steps_per_s", 0.0), "users[1].device_steps_per_s"),
    "negative speed": (
        lambda r: setattr(r.users[0], "device_steps_per_s", -2.0),
        "users[0].device_steps_per_s",
    ),
    "nan weight": (lambda r: setattr(r.users[2], "latency_weight", math.nan), "users[2].latency_weight"),
    "zero availability": (lambda r: setattr(r.servers[0], "availability", 0.0), "servers[0].availability"),
    "availability over 1": (lambda r: setattr(r.servers[1], "availability", 1.5), "servers[1].availability"),
    "nan availability": (
        lambda r: setattr(r.servers[1], "availability", math.nan),
        "servers[1].availability",
    ),
    "no steps": (lambda r: setattr(r, "steps", 0), "steps must be in 1.."),
    "repeated user": (
        lambda r: setattr(r.users[3], "user_id", "user-0"),
        "users: repeated user_ids ['user-0']",
    ),
    "empty user id": (lambda r: setattr(r.users[2], "user_id", ""), "users[2].user_id is empty"),
    "repeated server": (
        lambda r: setattr(r.servers[1], "server_id", "server-0"),
        "servers: repeated server_ids ['server-0']",
    ),
    "batch over the limit": (lambda r: setattr(r, "max_batch", 9), "max_batch must be in 0..8"),
    "unknown policy": (
        lambda r: setattr(r, "policy_name", "no-such"),
        "policy_name: unknown offloading policy",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_an_invalid_round_is_refused_naming_the_field(server: RunningServer, case: str) -> None:
    change, field_message = BAD_REQUESTS[case]
    assert field_message in refusal(server, _edit(change))


def test_every_problem_is_named_and_the_server_keeps_serving(server: RunningServer) -> None:
    request = _edit(lambda r: (setattr(r, "steps", 0), setattr(r.servers[0], "availability", 2.0)))
    details = refusal(server, request)
    assert "steps must be in 1.." in details and "servers[0].availability" in details
    assert len(decide(server, valid_request()).placements) == 4


def test_the_exact_optimum_is_refused_for_a_large_round(server: RunningServer) -> None:
    _, offload_round = round_of(1, 13, 2, policy_name="optimal")
    assert "the optimal policy decides at most 12, got 13" in refusal(server, round_to_proto(offload_round))


def test_the_client_reports_a_refusal_with_its_status(server: RunningServer) -> None:
    _, offload_round = round_of(1, 4, 2, policy_name="no-such")
    with PolicyClient(server.target, timeout_s=10.0) as client, pytest.raises(PolicyUnavailable) as caught:
        client.decide_offload(offload_round)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "policy_name" in str(caught.value)


# ----- loading and bookkeeping ------------------------------------------------------------------------
def test_weights_are_read_once_at_start(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_server()
    instance, offload_round = round_of(4, 16, 2)
    expected = {name: make_policy(name).solve(instance) for name in NETWORK_POLICIES}

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("policies must not be loaded while deciding")

    monkeypatch.setattr(offload_core, "make_policy", no_loading)
    monkeypatch.setattr(offload_policies, "load_numpy_scorer", no_loading)
    for name in NETWORK_POLICIES:
        reply = decide(running, round_to_proto(dataclasses.replace(offload_round, policy_name=name)))
        assert plan_from_proto(reply).to_assignment(offload_round) == expected[name], name


class Failing(offload_policies.OffloadPolicy):
    def solve(self, instance: Instance) -> Assignment:
        raise RuntimeError("boom")


class DroppingUsers(offload_policies.OffloadPolicy):
    def solve(self, instance: Instance) -> Assignment:
        return Assignment((), tuple(() for _ in range(instance.n_servers)))


def test_a_failing_policy_is_internal_and_a_bad_plan_never_leaves(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_server()
    assert running.server.planner is not None
    monkeypatch.setitem(running.server.planner.policies, "greedy", Failing())
    monkeypatch.setitem(running.server.planner.policies, "all-edge", DroppingUsers())
    _, offload_round = round_of(1, 4, 2)
    for name, message in (("greedy", "boom"), ("all-edge", "every user must be placed exactly once")):
        with grpc.insecure_channel(running.target) as channel, pytest.raises(grpc.RpcError) as caught:
            policy_service_pb2_grpc.PolicyServiceStub(channel).DecideOffload(
                round_to_proto(dataclasses.replace(offload_round, policy_name=name)), timeout=30
            )
        assert caught.value.code() == grpc.StatusCode.INTERNAL and message in caught.value.details()
    assert decide(running, round_to_proto(offload_round)).policy_name == "drl-convex"


def test_rounds_are_counted_in_the_metrics(server: RunningServer) -> None:
    labels = {"policy": "all-edge"}
    before = REGISTRY.get_sample_value("eat_policy_offload_rounds_total", labels) or 0.0
    invalid_before = REGISTRY.get_sample_value("eat_policy_offload_invalid_requests_total") or 0.0
    decide(server, round_to_proto(round_of(1, 4, 2, policy_name="all-edge")[1]))
    refusal(server, _edit(lambda r: setattr(r, "steps", 0)))
    assert REGISTRY.get_sample_value("eat_policy_offload_rounds_total", labels) == before + 1
    assert REGISTRY.get_sample_value("eat_policy_offload_invalid_requests_total") == invalid_before + 1


def test_an_unknown_default_policy_stops_the_planner_loading() -> None:
    with pytest.raises(KeyError, match="unknown offloading policy"):
        OffloadPlanner.load("no-such")


# ----- conversions and the curve, without a server -----------------------------------------------------
def test_rounds_and_plans_survive_the_wire() -> None:
    instance, offload_round = round_of(8, 10, 3, policy_name="greedy", max_batch=4)
    assert round_from_proto(
        pb.OffloadRequest.FromString(round_to_proto(offload_round).SerializeToString())
    ) == (offload_round)
    plan = plan_of(offload_round, make_policy("greedy").solve(dataclasses.replace(instance, max_batch=4)))
    message = plan_to_proto(OffloadDecision(plan, "greedy", "", time.time()), "r-1", 5)
    assert plan_from_proto(pb.OffloadPlan.FromString(message.SerializeToString())) == plan


def test_the_curve_at_the_measured_step_count_is_the_policies_own() -> None:
    measured = default_curve()
    assert np.array_equal(accuracy_for_steps(shipped_measurement(), measured.steps), measured.array())


def test_a_curve_refitted_for_more_steps_keeps_its_shape() -> None:
    measured = default_curve().array()
    doubled = accuracy_for_steps(shipped_measurement(), 2 * (len(measured) - 1))
    assert len(doubled) == 2 * len(measured) - 1
    assert np.all(np.diff(doubled) <= 1e-12) and np.all(
        np.diff(doubled, 2) <= 1e-9
    )  # non-increasing, concave
    assert doubled[0] == pytest.approx(measured[0]) and doubled[-1] == pytest.approx(measured[-1], abs=0.02)
