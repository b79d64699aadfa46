"""Settings of the executor service, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policy_models.profiles import get_profile
from services.common.settings import ServiceSettings, SettingsError, env_name

RUNNERS = ("sim", "diffusers")
DTYPES = ("float32", "float16", "bfloat16")
REAL_DEVICES = ("cpu", "cuda")  # what the diffusers runner runs on ("cuda:1" names one GPU)
PATCH_MODES = ("sync", "displaced")  # patch parallelism of gangs (services/executor/parallel)


@dataclass(frozen=True)
class ExecutorSettings(ServiceSettings):
    """One executor = one GPU server; times are simulated seconds unless a name says wall."""

    executor_id: str = "edge-0"
    runner: str = "sim"
    speed_factor: float = 1.0  # relative speed of this server; the reference profile is 1.0
    max_resident_models: int = 2
    profile: str = "reference"  # timing profile name (policy_models.profiles)
    models: tuple[str, ...] = ("sd-v1-4",)  # model names this executor can load
    models_dir: Path = Path("models")  # where a real runner finds <model>/ weights (unused by "sim")
    memory_budget_gb: float = 8.0  # diffusers: resident models' weights kept within this (GiB)
    dtype: str = "float32"  # diffusers: weights and compute precision
    resolution: int = 512  # diffusers: image side in pixels (a multiple of 8)
    heartbeat_s: float = 0.5  # wall seconds between heartbeats
    status_s: float = 2.0  # wall seconds between periodic full statuses
    busy_status_min_s: float = 0.2  # wall seconds: shorter attempts publish no BUSY status
    host: str = "127.0.0.1"
    device: str = "sim"
    patch_mode: str = "sync"  # diffusers gangs: "sync" (exact) or "displaced" (overlaps communication)
    warmup_steps: int = 4  # displaced mode: steps with fresh activations before going stale
    collective_timeout_s: float = 10.0  # wall seconds a gang collective waits before a member is lost

    def validate(self) -> None:
        super().validate()
        if not self.executor_id or "." in self.executor_id or "#" in self.executor_id:
            # The id is a routing-key word: dots and wildcards would break the topic bindings.
            raise SettingsError(f"{env_name('executor_id')} must be non-empty without '.' or '#'")
        if self.runner not in RUNNERS:
            raise SettingsError(f"{env_name('runner')} must be one of {RUNNERS}, got {self.runner!r}")
        if self.speed_factor <= 0:
            raise SettingsError(f"{env_name('speed_factor')} must be > 0, got {self.speed_factor}")
        if self.max_resident_models < 1:
            raise SettingsError(f"{env_name('max_resident_models')} must be >= 1")
        if not self.models:
            raise SettingsError(f"{env_name('models')} must name at least one model")
        if self.heartbeat_s <= 0 or self.status_s <= 0:
            raise SettingsError(f"{env_name('heartbeat_s')} and {env_name('status_s')} must be > 0")
        if self.runner == "diffusers":
            self._validate_diffusers()
        try:
            get_profile(self.profile)
        except ValueError as err:
            raise SettingsError(f"{env_name('profile')}: {err}") from err

    def _validate_diffusers(self) -> None:
        if self.device.split(":")[0] not in REAL_DEVICES:
            raise SettingsError(
                f"{env_name('device')} must be cpu, cuda or cuda:<n> for the diffusers runner, "
                f"got {self.device!r}"
            )
        if self.dtype not in DTYPES:
            raise SettingsError(f"{env_name('dtype')} must be one of {DTYPES}, got {self.dtype!r}")
        if self.patch_mode not in PATCH_MODES:
            mode = self.patch_mode
            raise SettingsError(f"{env_name('patch_mode')} must be one of {PATCH_MODES}, got {mode!r}")
        if self.warmup_steps < 0:
            raise SettingsError(f"{env_name('warmup_steps')} must be >= 0, got {self.warmup_steps}")
        if self.collective_timeout_s <= 0:
            raise SettingsError(f"{env_name('collective_timeout_s')} must be > 0")
        if self.memory_budget_gb <= 0:
            raise SettingsError(f"{env_name('memory_budget_gb')} must be > 0, got {self.memory_budget_gb}")
        if self.resolution < 8 or self.resolution % 8:
            # Stable Diffusion's autoencoder works on 8x8 pixel cells.
            raise SettingsError(
                f"{env_name('resolution')} must be a positive multiple of 8, got {self.resolution}"
            )
