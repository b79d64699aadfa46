"""Settings of the policy server, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policy_models.obs import MAX_MODELS
from policy_models.offload.policies import POLICY_NAMES as OFFLOAD_POLICY_NAMES
from policy_models.policies import is_known_policy
from policy_models.profiles import get_profile
from services.common.certs import check_token_source, read_token
from services.common.settings import ServiceSettings, SettingsError, env_name

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class PolicySettings(ServiceSettings):
    """Where to listen and which policy to serve, built for which cluster."""

    grpc_port: int = 50051  # 0 = pick a free port (tests)
    grpc_host: str = "127.0.0.1"  # deployments whose callers run elsewhere set 0.0.0.0
    # TLS on the gRPC port (PEM files) and the bearer token every call but health checks must carry,
    # inline or in a file (`eat certs dev --out DIR` makes all three).
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    policy_token: str = ""
    policy_token_file: Path | None = None
    # Development only: serve plaintext without authentication, and only on a loopback address.
    policy_insecure: bool = False
    grpc_reflection: bool = False  # serve grpc.reflection (for grpcurl), to authenticated callers
    policy: str = "reuse"  # a policy name ("reuse", "greedy", ...) or "checkpoint:<dir>"
    nodes: int = 4  # the cluster size the policy is built for
    models: tuple[str, ...] = ("sd-v1-4",)
    models_per_server: int = 2
    profile: str = "reference"  # timing profile name (policy_models.profiles)
    seed: int = 0  # seeds the policy's own generators (random and metaheuristic policies)
    # Consume eat.policy.updates for hot swaps. Off for servers that must not take updates meant for
    # another instance (tests sharing one broker).
    hot_swap: bool = True
    # The offloading policy (policy_models.offload) that decides DecideOffload rounds naming none.
    offload_policy: str = "drl-convex"

    @property
    def tls(self) -> bool:
        return self.grpc_tls_cert is not None

    def token(self) -> str:
        """The bearer token callers must present ("" = none configured); reads the token file."""
        return read_token(self.policy_token, self.policy_token_file)

    def check_security(self) -> None:
        """Refuse to serve without TLS and a token, unless the development switch is on and the port
        is reachable from this host only. Checked when serving starts, not in `validate`: tools that
        only build policies from these settings need no TLS material."""
        if self.policy_insecure:
            self._check_insecure()
            return
        if not self.tls:
            raise SettingsError(
                f"no TLS material: set {env_name('grpc_tls_cert')}, {env_name('grpc_tls_key')} and "
                f"{env_name('policy_token_file')} (`eat certs dev --out DIR` makes them), or "
                f"{env_name('policy_insecure')}=1 for a development server on 127.0.0.1"
            )
        try:
            token = self.token()
        except ValueError as err:
            raise SettingsError(f"{env_name('policy_token_file')}: {err}") from err
        if not token:
            raise SettingsError(
                f"TLS needs a token: set {env_name('policy_token_file')} or {env_name('policy_token')}"
            )

    def _check_insecure(self) -> None:
        switch = f"{env_name('policy_insecure')}=1"
        if self.grpc_host not in LOOPBACK_HOSTS:
            raise SettingsError(
                f"{switch} serves without TLS or authentication, so only on a loopback address "
                f"({', '.join(LOOPBACK_HOSTS)}); {env_name('grpc_host')} is {self.grpc_host!r}"
            )
        if self.tls or self.policy_token or self.policy_token_file:
            raise SettingsError(f"{switch} turns TLS and the token off: unset them, or unset the switch")

    def validate(self) -> None:
        super().validate()
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise SettingsError(f"{env_name('grpc_tls_cert')} and {env_name('grpc_tls_key')} go together")
        check_token_source(self.policy_token, self.policy_token_file)
        if not 0 <= self.grpc_port <= 65535:
            raise SettingsError(f"{env_name('grpc_port')} must be in 0..65535, got {self.grpc_port}")
        if not is_known_policy(self.policy):
            raise SettingsError(f"{env_name('policy')}: unknown policy {self.policy!r}")
        if self.offload_policy not in OFFLOAD_POLICY_NAMES:
            raise SettingsError(
                f"{env_name('offload_policy')}: unknown offloading policy {self.offload_policy!r}; "
                f"known: {', '.join(OFFLOAD_POLICY_NAMES)}"
            )
        if self.nodes < 1:
            raise SettingsError(f"{env_name('nodes')} must be >= 1, got {self.nodes}")
        if not self.models or len(self.models) > MAX_MODELS or len(set(self.models)) != len(self.models):
            raise SettingsError(f"{env_name('models')} must name 1..{MAX_MODELS} distinct models")
        if self.models_per_server < 1:
            raise SettingsError(f"{env_name('models_per_server')} must be >= 1")
        try:
            get_profile(self.profile)
        except ValueError as err:
            raise SettingsError(f"{env_name('profile')}: {err}") from err
