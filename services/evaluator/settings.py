"""Settings of the evaluator service, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.settings import ServiceSettings, SettingsError, env_name

TINY_MODEL = "tiny"
LOCAL_DIR = "local-dir:"  # open_clip's schema for a model directory (config and weights together)


@dataclass(frozen=True)
class EvaluatorSettings(ServiceSettings):
    # "tiny", an open_clip architecture name (e.g. ViT-B-32, weights in clip_checkpoint), or an open_clip
    # model directory "local-dir:<dir>" (config and weights in it, e.g. tinyworld/weights/scorer)
    clip_model: str = TINY_MODEL
    clip_checkpoint: Path | None = None  # local weights: .safetensors preferred, else a torch state dict
    batch_size: int = 16  # most real images scored in one forward pass
    batch_window_s: float = 0.05  # wall seconds a real image waits for others to share its batch
    device: str = "cpu"

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 1:
            raise SettingsError(f"{env_name('batch_size')} must be >= 1, got {self.batch_size}")
        if self.batch_window_s < 0:
            raise SettingsError(f"{env_name('batch_window_s')} must be >= 0, got {self.batch_window_s}")
        if self.clip_model.startswith(LOCAL_DIR):
            if self.clip_checkpoint is not None:
                raise SettingsError(
                    f"{env_name('clip_checkpoint')} goes with an architecture name, not {LOCAL_DIR}"
                )
            if not Path(self.clip_model.removeprefix(LOCAL_DIR)).is_dir():
                raise SettingsError(
                    f"{env_name('clip_model')}: no directory {self.clip_model.removeprefix(LOCAL_DIR)}"
                )
        elif self.clip_model != TINY_MODEL and self.clip_checkpoint is None:
            # Random weights for a real architecture would publish meaningless scores without a sign.
            raise SettingsError(
                f"{env_name('clip_checkpoint')} is required for {env_name('clip_model')}={self.clip_model}"
            )
