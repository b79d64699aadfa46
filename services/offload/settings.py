"""Settings of the offload coordinator, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.settings import ServiceSettings, SettingsError, env_name
from services.offload.core import CoordinatorConfig
from services.policy_server.client import PolicyClientSettings


@dataclass(frozen=True)
class OffloadSettings(ServiceSettings, PolicyClientSettings):
    policy_target: str = "127.0.0.1:50051"  # the policy server's gRPC address
    policy_timeout_s: float = 5.0  # deadline of one DecideOffload
    offload_policy: str = ""  # empty: the policy server's default (drl-convex)
    edge_servers: tuple[str, ...] = ("edge-0",)  # each runs `python -m services.edge` with its id
    edge_availability: tuple[float, ...] = ()  # per server, in (0, 1]; empty: 1.0 each
    round_size: int = 8
    round_window_s: float = 1.0
    heartbeat_timeout_s: float = 5.0
    report_slack: float = 2.0
    report_grace_s: float = 5.0
    edge_timeout_s: float = 30.0
    tick_s: float = 0.2  # how often rounds and deadlines are checked

    def validate(self) -> None:
        super().validate()
        if self.edge_availability and len(self.edge_availability) != len(self.edge_servers):
            raise SettingsError(f"{env_name('edge_availability')} needs one value per edge server")
        if any(not 0 < a <= 1 for a in self.edge_availability):
            raise SettingsError(f"{env_name('edge_availability')} values must be in (0, 1]")
        if self.round_size < 1:
            raise SettingsError(f"{env_name('round_size')} must be >= 1, got {self.round_size}")
        for name in ("round_window_s", "heartbeat_timeout_s", "report_grace_s", "edge_timeout_s", "tick_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0")
        if self.report_slack < 1:
            raise SettingsError(f"{env_name('report_slack')} must be >= 1, got {self.report_slack}")

    @property
    def journal_path(self) -> Path:
        """The coordinator's journal (SQLite) under the state directory: requests survive a restart."""
        return self.state_dir / "offload.sqlite3"

    def coordinator(self) -> CoordinatorConfig:
        return CoordinatorConfig(
            servers=self.edge_servers,
            availability=self.edge_availability or tuple(1.0 for _ in self.edge_servers),
            round_size=self.round_size,
            round_window_s=self.round_window_s,
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            report_slack=self.report_slack,
            report_grace_s=self.report_grace_s,
            edge_timeout_s=self.edge_timeout_s,
            policy_name=self.offload_policy,
        )
