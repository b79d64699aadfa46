"""The gRPC service end to end on real servers: decisions, identity, health, reflection, errors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from eat.v1 import cluster_pb2, policy_service_pb2, policy_service_pb2_grpc
from policy_models.live import Decision, LiveScheduler, ModelCatalog, Snapshot
from policy_models.obs import OBS_SPEC_VERSION
from policy_models.policies import make_policy
from services.common.convert import decision_from_proto, snapshot_to_proto
from services.policy_server.core import scheduler_config
from services.policy_server.server import SERVICE_NAME, RunningServer
from tests.services.policy_server.conftest import (
    MODELS,
    all_busy_snapshot,
    save_tiny_checkpoint,
    server_info,
    settings,
    startable_snapshot,
    task,
)

StartServer = Callable[..., RunningServer]


def decide(
    server: RunningServer, snapshot: Snapshot, request_id: str = "r-1"
) -> policy_service_pb2.DecideResponse:
    with grpc.insecure_channel(server.target) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        return stub.Decide(
            policy_service_pb2.DecideRequest(request_id=request_id, snapshot=snapshot_to_proto(snapshot)),
            timeout=10,
        )


def outcome(decision: Decision) -> tuple[bool, str, int, int]:
    return decision.execute, decision.task_id, decision.steps, decision.slot


def direct_scheduler(policy: str) -> LiveScheduler:
    cfg = scheduler_config(settings())
    return LiveScheduler(make_policy(policy, cfg), cfg, ModelCatalog(MODELS), seed=0)


@pytest.mark.parametrize("policy", ["reuse", "fifo"])
def test_a_task_that_fits_is_started_as_the_policy_itself_decides(
    start_server: StartServer, policy: str
) -> None:
    server = start_server(policy=policy)
    snapshot = startable_snapshot()
    reply = decide(server, snapshot, request_id="req-7")
    cfg = scheduler_config(settings())
    assert reply.request_id == "req-7"
    assert reply.execute and reply.task_id in {"t-a", "t-b"}  # t-c needs 4 servers, only 2 are idle
    assert cfg.min_steps <= reply.steps <= cfg.max_steps
    assert len(reply.action) == 2 + cfg.visible_queue
    assert (reply.policy_version, reply.policy_name) == (0, policy)
    assert reply.decide_latency_us > 0
    expected = direct_scheduler(policy).decide(snapshot)
    served = decision_from_proto(reply, snapshot)
    assert outcome(served) == outcome(expected)
    assert served.action == pytest.approx(expected.action, abs=1e-6)  # float32 on the wire


@pytest.mark.parametrize("policy", ["reuse", "fifo"])
def test_with_no_idle_server_the_policy_waits(start_server: StartServer, policy: str) -> None:
    reply = decide(start_server(policy=policy), all_busy_snapshot())
    assert not reply.execute and reply.task_id == "" and reply.steps == 0
    assert len(reply.action) == 2 + scheduler_config(settings()).visible_queue


def test_get_version_names_a_heuristic_policy(start_server: StartServer) -> None:
    server = start_server(policy="greedy")
    with grpc.insecure_channel(server.target) as channel:
        version = policy_service_pb2_grpc.PolicyServiceStub(channel).GetVersion(
            policy_service_pb2.GetVersionRequest(), timeout=10
        )
    assert (version.version, version.policy_name, version.algorithm, version.checkpoint_uri) == (
        0,
        "greedy",
        "",
        "",
    )
    assert version.obs_spec_version == OBS_SPEC_VERSION and version.loaded_at.seconds > 0


def test_a_learned_policy_from_a_checkpoint_serves_as_version_1(
    start_server: StartServer, tiny_checkpoint: Path
) -> None:
    server = start_server(policy=f"checkpoint:{tiny_checkpoint}")
    snapshot = startable_snapshot()
    reply = decide(server, snapshot)
    assert (reply.policy_version, reply.policy_name) == (1, "eat")
    expected = direct_scheduler(f"checkpoint:{tiny_checkpoint}").decide(snapshot)
    served = decision_from_proto(reply, snapshot)
    assert outcome(served) == outcome(expected)
    assert served.action == pytest.approx(expected.action, abs=1e-6)
    with grpc.insecure_channel(server.target) as channel:
        version = policy_service_pb2_grpc.PolicyServiceStub(channel).GetVersion(
            policy_service_pb2.GetVersionRequest(), timeout=10
        )
    assert (version.version, version.algorithm, version.checkpoint_uri) == (1, "eat", str(tiny_checkpoint))


def test_a_fresh_residual_checkpoint_serves_the_heuristics_decisions(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A hinted, residual agent computes its hint inside the server from the same observation, and an
    untrained one (zero corrections) decides exactly as the heuristic it is hinted by."""
    checkpoint = save_tiny_checkpoint(tmp_path / "residual", hint="reuse", residual=True)
    server = start_server(policy=f"checkpoint:{checkpoint}")
    for snapshot in (startable_snapshot(), all_busy_snapshot()):
        served = decision_from_proto(decide(server, snapshot), snapshot)
        expected = direct_scheduler("reuse").decide(snapshot)
        assert outcome(served) == outcome(expected)
        assert served.action == pytest.approx(expected.action, abs=1e-6)


def invalid_argument(server: RunningServer, request: policy_service_pb2.DecideRequest) -> grpc.RpcError:
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        policy_service_pb2_grpc.PolicyServiceStub(channel).Decide(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def test_invalid_snapshots_are_refused_and_the_server_keeps_serving(start_server: StartServer) -> None:
    server = start_server()
    no_servers = cluster_pb2.ClusterSnapshot(now_s=1.0)
    no_servers.queue.add(task_id="t-a", patches=1, model="sd-v1-4")
    error = invalid_argument(server, policy_service_pb2.DecideRequest(snapshot=no_servers))
    assert "no servers" in error.details()
    assert "snapshot is missing" in invalid_argument(server, policy_service_pb2.DecideRequest()).details()
    repeated = Snapshot(1.0, (server_info(0),), (task("t-a"), task("t-a", patches=0)), 2)
    details = invalid_argument(
        server, policy_service_pb2.DecideRequest(snapshot=snapshot_to_proto(repeated))
    ).details()
    assert "repeated task_ids ['t-a']" in details and "patches must be >= 1" in details
    assert decide(server, startable_snapshot()).execute  # still serving


def test_health_is_serving_for_the_service_and_the_server(start_server: StartServer) -> None:
    server = start_server()
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (SERVICE_NAME, ""):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


@pytest.mark.slow
def test_health_turns_not_serving_when_the_server_shuts_down(start_server: StartServer) -> None:
    server = start_server()
    statuses: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=20
            )
            try:
                for reply in stream:
                    statuses.append(reply.status)
                    watching.set()
            except grpc.RpcError:
                pass  # the server closed the stream once its grace period ended

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert watching.wait(10)
    server.stop()
    watcher.join(10)
    assert statuses == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


def test_reflection_lists_the_policy_and_health_services(start_server: StartServer) -> None:
    server = start_server(grpc_reflection=True)
    with grpc.insecure_channel(server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        descriptor = database.FindFileContainingSymbol(SERVICE_NAME)
    assert descriptor.package == "eat.v1" and [s.name for s in descriptor.service] == ["PolicyService"]


def test_decisions_and_the_version_are_in_the_metrics(start_server: StartServer) -> None:
    server = start_server(policy="fifo")
    labels = {"policy": "fifo", "execute": "true"}
    before = REGISTRY.get_sample_value("eat_policy_decisions_total", labels) or 0.0
    latency_before = REGISTRY.get_sample_value("eat_policy_decide_seconds_count") or 0.0
    for _ in range(3):
        decide(server, startable_snapshot())
    assert REGISTRY.get_sample_value("eat_policy_decisions_total", labels) == before + 3
    assert REGISTRY.get_sample_value("eat_policy_decide_seconds_count") == latency_before + 3
    assert REGISTRY.get_sample_value("eat_policy_version") == 0


def test_the_server_serves_while_the_broker_is_unreachable(start_server: StartServer) -> None:
    server = start_server(hot_swap=True, amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", reconnect_max_s=0.2)
    assert decide(server, startable_snapshot()).execute
    server.stop(timeout_s=10)
    assert not server.running, "the server (or its update listener) did not stop"
