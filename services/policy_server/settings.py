"""Settings of the policy server, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from policy_models.obs import MAX_MODELS
from policy_models.offload.policies import POLICY_NAMES as OFFLOAD_POLICY_NAMES
from policy_models.policies import is_known_policy
from policy_models.profiles import get_profile
from services.common.settings import ServiceSettings, SettingsError, env_name


@dataclass(frozen=True)
class PolicySettings(ServiceSettings):
    """Where to listen and which policy to serve, built for which cluster."""

    grpc_port: int = 50051  # 0 = pick a free port (tests)
    grpc_host: str = "0.0.0.0"
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

    def validate(self) -> None:
        super().validate()
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
