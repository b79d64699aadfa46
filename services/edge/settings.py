"""Settings of an edge worker, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.settings import ServiceSettings, SettingsError, env_name
from tinyworld.scenes import RESOLUTION
from tinyworld.weights import PIPELINE_DIR, USERS_DIR


@dataclass(frozen=True)
class EdgeSettings(ServiceSettings):
    server_id: str = "edge-0"  # its queue is eat.edge.<server_id>
    pipeline_dir: Path = PIPELINE_DIR  # the base model (a diffusers Stable Diffusion directory)
    users_dir: Path = USERS_DIR  # one adapter folder per user
    users: tuple[str, ...] = ()  # adapters to load; empty: every folder of users_dir
    resolution: int = RESOLUTION  # image side in pixels, the same on every edge server and device
    torch_threads: int = 1
    # A latent its device has not taken within this long is dropped (dead-lettered) by the broker: by
    # then the coordinator has taken the request back, so a device started later must not finish it.
    # Keep it above the coordinator's report deadline for a device phase (slack x (T - s)/X + grace).
    handoff_ttl_s: float = 300.0

    def validate(self) -> None:
        super().validate()
        if not self.server_id:
            raise SettingsError(f"{env_name('server_id')} is empty")
        if not self.pipeline_dir.is_dir():
            raise SettingsError(f"{env_name('pipeline_dir')}: no directory {self.pipeline_dir}")
        if self.torch_threads < 1:
            raise SettingsError(f"{env_name('torch_threads')} must be >= 1")
        if self.handoff_ttl_s <= 0:
            raise SettingsError(f"{env_name('handoff_ttl_s')} must be > 0")

    def adapter_users(self) -> tuple[str, ...]:
        if self.users:
            return self.users
        return tuple(sorted(p.name for p in self.users_dir.iterdir() if p.is_dir()))
