"""Ingest settings (EAT_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import ServiceSettings


@dataclass(frozen=True)
class IngestSettings(ServiceSettings):
    models: tuple[str, ...] = ("sd-v1-4",)  # the model registry: names a task may ask for
    max_patches: int = 8  # largest gang a task may ask for
    min_steps: int = 1  # the system's step range (QoS bounds must lie inside it)
    max_steps: int = 32
    max_prompt_chars: int = 2_000
    max_deadline_s: float = 86_400.0
