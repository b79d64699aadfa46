"""Settings of a device process, read from EAT_* environment variables (`eat device` flags override)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import ServiceSettings, SettingsError, env_name
from tinyworld.scenes import RESOLUTION
from tinyworld.weights import PIPELINE_DIR, USERS_DIR


@dataclass(frozen=True)
class DeviceSettings(ServiceSettings):
    device_user: str = ""  # the user whose queue (eat.device.<user>) and adapter this device serves
    device_speed: float = 1.0  # steps per second the device keeps
    device_simulated: bool = False  # skip the model: sleep the phase's time, report no image
    pipeline_dir: Path = PIPELINE_DIR
    users_dir: Path = USERS_DIR  # the user's adapter is users_dir / <user>
    resolution: int = RESOLUTION
    heartbeat_s: float = 1.0
    torch_threads: int = 1

    def validate(self) -> None:
        super().validate()
        if not self.device_user:
            raise SettingsError(f"{env_name('device_user')} (or --user) is required")
        if not (math.isfinite(self.device_speed) and self.device_speed > 0):
            raise SettingsError(f"{env_name('device_speed')} must be > 0, got {self.device_speed}")
        if self.heartbeat_s <= 0:
            raise SettingsError(f"{env_name('heartbeat_s')} must be > 0")
        if not self.device_simulated and not (self.users_dir / self.device_user).is_dir():
            raise SettingsError(f"no adapter for {self.device_user!r} in {self.users_dir}")
