"""The synchronous policy client the aggregator uses: Decide, DecideOffload, version and health over one
channel.

Every call carries a deadline (`timeout_s`) and never waits for a server that is down: it fails fast
with `PolicyUnavailable`, and the caller falls back as it sees fit. The channel reconnects on its own
with a short backoff, so calls work again soon after the server comes back.

Credentials come from the caller's environment (`PolicyClientSettings`: EAT_POLICY_CA and
EAT_POLICY_TOKEN_FILE or EAT_POLICY_TOKEN), so a service that opens a `PolicyClient` needs no code for
them: with a CA the channel is TLS and every call carries the bearer token; without one it is
plaintext, which only a development server (EAT_POLICY_INSECURE) accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eat.v1 import policy_service_pb2, policy_service_pb2_grpc
from policy_models.live import Decision, Snapshot
from services.common.certs import check_token_source, read_file, read_token
from services.common.convert import decision_from_proto, epoch_s, snapshot_to_proto
from services.common.settings import EnvSettings, SettingsError, env_name
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


@dataclass(frozen=True)
class PolicyClientSettings(EnvSettings):
    """How a caller proves itself to the policy server and checks the server's certificate. Services
    whose settings class inherits these fields read them with their other settings."""

    policy_ca: Path | None = None  # PEM CA bundle that signed the server's certificate; None = plaintext
    policy_token: str = ""  # the bearer token, inline...
    policy_token_file: Path | None = None  # ...or in a file (a mounted secret)

    def validate(self) -> None:
        super().validate()
        check_token_source(self.policy_token, self.policy_token_file)
        if self.policy_ca is None and (self.policy_token or self.policy_token_file):
            # gRPC sends call credentials over TLS only; a token without a CA would never leave.
            raise SettingsError(f"a token needs {env_name('policy_ca')}: it is sent over TLS only")

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS trusting `policy_ca`, with the token on every call; None for a plaintext channel."""
        if self.policy_ca is None:
            return None
        tls = grpc.ssl_channel_credentials(root_certificates=read_file(self.policy_ca, "policy CA"))
        token = read_token(self.policy_token, self.policy_token_file)
        if not token:
            return tls
        return grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(token))


def policy_channel(target: str, credentials: PolicyClientSettings | None = None) -> grpc.Channel:
    """A channel to the policy server at `target`, with the credentials of the caller's environment
    unless others are given."""
    settings = PolicyClientSettings.from_env() if credentials is None else credentials
    channel_credentials = settings.channel_credentials()
    if channel_credentials is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, channel_credentials, options=CHANNEL_OPTIONS)


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
    """A client of one policy server (`target` as "host:port"). Thread-safe: calls may overlap.
    `credentials` default to the caller's environment (PolicyClientSettings.from_env())."""

    def __init__(
        self, target: str, timeout_s: float = 0.5, credentials: PolicyClientSettings | None = None
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = policy_channel(target, credentials)
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
