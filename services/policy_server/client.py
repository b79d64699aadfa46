"""The synchronous policy client the aggregator uses: Decide, DecideOffload, version and health over one
channel.

Every call carries a deadline (`timeout_s`) and never waits for a server that is down: it fails fast
with `PolicyUnavailable`, and the caller falls back as it sees fit. The channel reconnects on its own
with a short backoff, so calls work again soon after the server comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eat.v1 import policy_service_pb2, policy_service_pb2_grpc
from policy_models.live import Decision, Snapshot
from services.common.convert import decision_from_proto, epoch_s, snapshot_to_proto
from services.policy_server.offload import plan_from_proto, round_to_proto
from services.policy_server.offload_core import OffloadRound, RoundPlan

R = TypeVar("R", bound=Message)
SERVICE_NAME = policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
CHANNEL_OPTIONS = (
    # Reconnect quickly after the server restarts (gRPC's defaults back off up to 120 s). Not
    # grpc.min_reconnect_backoff_ms: gRPC also uses it as the connect timeout, and a short one fails
    # handshakes on a loaded machine; each call's own deadline already bounds the wait.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class PolicyUnavailable(Exception):
    """No decision: the server is down, the deadline passed, or it answered with an error."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code  # the gRPC status, when the call got that far


@dataclass(frozen=True)
class PolicyReply:
    decision: Decision
    version: int
    policy_name: str
    server_latency_us: int


@dataclass(frozen=True)
class OffloadReply:
    """A decided offloading round (eat.v1.OffloadPlan as plain data)."""

    plan: RoundPlan
    policy_name: str
    policy_version: str  # "sha256:..." of a learned policy's weights; empty for a rule
    server_latency_us: int
    decided_at: float  # epoch seconds


@dataclass(frozen=True)
class PolicyVersionInfo:
    """Which policy is serving (eat.v1.PolicyVersion as plain data)."""

    version: int  # 0 = a non-learned policy
    policy_name: str
    algorithm: str
    checkpoint_uri: str
    obs_spec_version: int
    loaded_at: float  # epoch seconds


class PolicyClient:
    """A client of one policy server (`target` as "host:port"). Thread-safe: calls may overlap."""

    def __init__(self, target: str, timeout_s: float = 0.5) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._policy = policy_service_pb2_grpc.PolicyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def decide(self, snapshot: Snapshot, request_id: str = "") -> PolicyReply:
        """The serving policy's decision on `snapshot`; raises PolicyUnavailable."""
        request = policy_service_pb2.DecideRequest(
            request_id=request_id, snapshot=snapshot_to_proto(snapshot)
        )
        response = self._call("Decide", self._policy.Decide, request)
        return PolicyReply(
            decision=decision_from_proto(response, snapshot),
            version=response.policy_version,
            policy_name=response.policy_name,
            server_latency_us=response.decide_latency_us,
        )

    def decide_offload(
        self, offload_round: OffloadRound, request_id: str = "", timeout_s: float | None = None
    ) -> OffloadReply:
        """The plan of an offloading round; raises PolicyUnavailable (INVALID_ARGUMENT names the bad
        field). `timeout_s` overrides the client's deadline: large rounds and the exact optimum take
        longer than a Decide."""
        request = round_to_proto(offload_round, request_id)
        message = self._call("DecideOffload", self._policy.DecideOffload, request, timeout_s)
        return OffloadReply(
            plan=plan_from_proto(message),
            policy_name=message.policy_name,
            policy_version=message.policy_version,
            server_latency_us=message.decide_latency_us,
            decided_at=epoch_s(message.decided_at),
        )

    def version(self) -> PolicyVersionInfo:
        """Which policy is serving; raises PolicyUnavailable."""
        message = self._call("GetVersion", self._policy.GetVersion, policy_service_pb2.GetVersionRequest())
        return PolicyVersionInfo(
            version=message.version,
            policy_name=message.policy_name,
            algorithm=message.algorithm,
            checkpoint_uri=message.checkpoint_uri,
            obs_spec_version=message.obs_spec_version,
            loaded_at=epoch_s(message.loaded_at),
        )

    def healthy(self) -> bool:
        """True when the server reports the policy service SERVING; False on any error."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=self.timeout_s
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, rpc: Callable[..., R], request: Message, timeout_s: float | None = None
    ) -> R:
        # wait_for_ready stays off: a server that is down fails the call at once instead of holding it
        # until the deadline.
        try:
            return rpc(request, timeout=self.timeout_s if timeout_s is None else timeout_s)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            raise PolicyUnavailable(f"{method} on {self.target} failed: {code}: {details}", code) from err
