"""Ingest settings (EAT_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass

from policy_models.profiles import get_profile
from services.common.settings import ServiceSettings, SettingsError, env_name


@dataclass(frozen=True)
class IngestSettings(ServiceSettings):
    models: tuple[str, ...] = ("sd-v1-4",)  # the model registry: names a task may ask for
    max_patches: int = 8  # largest gang a task may ask for
    # The cluster as the aggregator knows it (its EAT_NODES and EAT_PROFILE): a task needing more
    # servers than there are, or a gang size the timing profile has no time for, can never run.
    nodes: int = 4
    profile: str = "reference"
    min_steps: int = 1  # the system's step range (QoS bounds must lie inside it)
    max_steps: int = 32
    max_prompt_chars: int = 2_000
    max_deadline_s: float = 86_400.0
    # A client's submitted_at is trusted only this far before ingest receives the submission (its time
    # in the submissions queue); later than receipt, or earlier than this, it is clamped.
    max_clock_skew_s: float = 60.0

    def validate(self) -> None:
        super().validate()
        if self.nodes < 1:
            raise SettingsError(f"{env_name('nodes')} must be >= 1, got {self.nodes}")
        try:
            get_profile(self.profile)
        except ValueError as err:
            raise SettingsError(f"{env_name('profile')}: {err}") from err
        if not 1 <= self.min_steps <= self.max_steps:
            raise SettingsError(f"need 1 <= {env_name('min_steps')} <= {env_name('max_steps')}")
        if self.max_clock_skew_s < 0:
            raise SettingsError(f"{env_name('max_clock_skew_s')} must be >= 0, got {self.max_clock_skew_s}")

    @property
    def gang_sizes(self) -> tuple[int, ...]:
        """The gang sizes the timing profile has times for (the only ones a task can run on)."""
        return get_profile(self.profile).patch_sizes
