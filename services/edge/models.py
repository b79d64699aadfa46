"""The personal models' computation, shared by edge servers and devices: the base pipeline resident
with users' LoRA adapters, the batched early phase, the finishing phase and stored images."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.common.domain import ImageInfo
from services.common.hybrid import EdgeBatch, Member
from services.edge.core import safe_name
from services.executor import split_phase
from services.executor.diffusers_runner import store_png
from tinyworld.personal import AdapterBank
from tinyworld.text_to_image import load_pipeline


class PersonalModels:
    """One resident pipeline and the adapters of `users` (each from `users_dir / <user>`)."""

    def __init__(self, pipeline_dir: Path, users_dir: Path, users: Iterable[str], resolution: int) -> None:
        self.pipeline = load_pipeline(pipeline_dir)
        self.pipeline.set_progress_bar_config(disable=True)
        self.bank = AdapterBank(self.pipeline)
        for user in users:
            self.bank.load(user, users_dir / user)
        self.resolution = resolution

    @property
    def users(self) -> set[str]:
        return set(self.bank.loaded)

    def early_phase(self, batch: EdgeBatch) -> split_phase.Phase:
        """Steps [0, split) of the whole batch, one UNet forward per step: the base model, or the one
        member's own adapter."""
        if batch.adapter_user:
            users = {m.user_id for m in batch.members}
            assert users == {batch.adapter_user}, f"adapter batch mixes users {sorted(users)}"
        self.bank.use(batch.adapter_user or None)
        prompts = [m.prompt for m in batch.members]
        seeds = [m.seed for m in batch.members]
        phase = split_phase.begin(self.pipeline, prompts, seeds, batch.steps, self.resolution)
        return split_phase.advance(self.pipeline, phase, batch.split_step)

    def late_phase(
        self, member: Member, steps: int, done_step: int, latent: np.ndarray | None, user: str
    ) -> split_phase.Phase:
        """Steps [done_step, steps) of one request with `user`'s adapter, from the handed-over latent
        (from the seeded noise when `latent` is None)."""
        self.bank.use(user)
        if latent is None:
            phase = split_phase.begin(self.pipeline, [member.prompt], [member.seed], steps, self.resolution)
        else:
            states = split_phase.encode_prompts(self.pipeline, [member.prompt])
            tensor = torch.from_numpy(np.array(latent, dtype=np.float32)).to(self.pipeline.device)
            phase = split_phase.Phase(tensor.to(self.pipeline.unet.dtype), states, steps, done_step)
        return split_phase.advance(self.pipeline, phase, steps)

    def store(
        self, phase: split_phase.Phase, task_ids: list[str], result_store: Path, place: str
    ) -> list[ImageInfo]:
        """Decode finished requests and store each PNG at `<result_store>/<task id>/<place>.png`."""
        images = split_phase.decode(self.pipeline, phase)
        infos = []
        for task_id, pixels in zip(task_ids, images, strict=True):
            if not safe_name(task_id):
                raise ValueError(f"task id {task_id!r} cannot name a result folder")
            infos.append(store_png(Image.fromarray(pixels), result_store / task_id / f"{place}.png"))
        return infos


def latents_of(phase: split_phase.Phase) -> list[np.ndarray]:
    """Each request's latent as a (1, c, h, w) float32 array, for the wire."""
    return [one.latents.float().cpu().numpy() for one in split_phase.split(phase)]
