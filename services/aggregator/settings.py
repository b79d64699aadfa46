"""Aggregator settings (EAT_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import ServiceSettings, SettingsError, env_name
from services.policy_server.client import PolicyClientSettings


@dataclass(frozen=True)
class AggregatorSettings(ServiceSettings, PolicyClientSettings):
    """The aggregator's settings; the policy server's CA and token (EAT_POLICY_CA, EAT_POLICY_TOKEN_FILE)
    are PolicyClientSettings' fields, which its PolicyClient reads."""

    policy_target: str = "127.0.0.1:50051"  # the policy server (gRPC host:port); "" = local policy only
    decide_timeout_s: float = 0.5
    fallback_policy: str = "reuse"  # decides locally while the policy server is unreachable
    nodes: int = 4  # the cluster size the policy's observation is built for
    models: tuple[str, ...] = ("sd-v1-4",)
    models_per_server: int = 2
    profile: str = "reference"
    heartbeat_timeout_s: float = 3.0  # wall seconds without a heartbeat before an executor is down
    orphan_grace_s: float = 5.0  # wall seconds a dispatched gang may show no sign of the task
    no_capacity_after_s: float = 30.0  # a task bigger than the live cluster fails after this long
    max_attempts: int = 3
    # An executor's claimed attempt time (remaining, load, run) is capped at this many times the
    # profile's slowest attempt (its slowest load plus the most steps at its slowest step time).
    attempt_bound_factor: float = 10.0
    # A gang member that refuses an attempt as busy (the gang was released while it still finished its
    # last one): the gang is held off until it reports again, at most this long (wall seconds), and
    # the attempt is retried without counting, up to max_busy_refusals times.
    busy_hold_s: float = 2.0
    max_busy_refusals: int = 100
    recheck_s: float = 5.0  # model seconds: ask the policy again after a wait with nothing happening
    min_recheck_wall_s: float = 0.02  # ...but never sooner than this (wall), even at a large time_scale
    # Guardrail: a task that could start but has waited this long (model seconds) is started by the
    # fallback policy when the policy says wait, so a policy that keeps waiting cannot starve tasks.
    starvation_s: float = 120.0
    rendezvous_port_base: int = 29500  # rank 0 serves the gang's TCP store on base + (n % span)
    rendezvous_port_span: int = 100
    rendezvous_timeout_s: float = 30.0
    episode_tasks: int = 32  # live episode windows for the observation's progress features
    episode_time_s: float = 1024.0

    def validate(self) -> None:
        super().validate()
        if self.max_attempts < 1:
            raise SettingsError(f"{env_name('max_attempts')} must be >= 1")
        if self.busy_hold_s < 0 or self.max_busy_refusals < 0:
            raise SettingsError(f"{env_name('busy_hold_s')} and {env_name('max_busy_refusals')} must be >= 0")
        if self.nodes < 1:
            raise SettingsError(f"{env_name('nodes')} must be >= 1")
        if not self.attempt_bound_factor >= 1.0:
            raise SettingsError(f"{env_name('attempt_bound_factor')} must be >= 1")
