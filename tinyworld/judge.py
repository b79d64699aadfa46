"""The judge: a small classifier that reads a scene's attributes back from its image.

It is trained on rendered images only (the `judge` split, its own seeds) and used by tests and
benchmarks to check that generated images show what their prompts ask for. It is not the evaluator's
scorer: the evaluator must not grade itself. Weights are safetensors with a JSON config; nothing is
pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from tinyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    RESOLUTION,
    SHAPES,
    SIZES,
    Scene,
    render_batch,
    split_scenes,
)

# What the judge reads, and the values each attribute takes (its class labels, in order).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "position": POSITIONS,
    "count": ("1", "2"),
    "background": tuple(BACKGROUNDS),
}
WEIGHTS, CONFIG = "model.safetensors", "config.json"
JUDGE_FORMAT = "tinyworld-judge/1"


def labels_of(scene: Scene) -> dict[str, int]:
    values = {**asdict(scene), "count": str(scene.count)}
    return {name: ATTRIBUTES[name].index(values[name]) for name in ATTRIBUTES}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float in [-1, 1], the diffusers convention."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Judge(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4 px), a shared layer, one linear head per attribute."""

    def __init__(
        self,
        width: int = 32,
        hidden: int = 128,
        resolution: int = RESOLUTION,
        attributes: dict[str, tuple[str, ...]] = ATTRIBUTES,
    ) -> None:
        super().__init__()
        self.config = {"width": width, "hidden": hidden, "resolution": resolution}
        self.attributes = attributes

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.GELU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(stage(3, width), stage(width, 2 * width), stage(2 * width, 4 * width))
        side = resolution // 8
        self.shared = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * side * side, hidden), nn.GELU())
        self.heads = nn.ModuleDict(
            {name: nn.Linear(hidden, len(values)) for name, values in attributes.items()}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.shared(self.features(images))
        return {name: head(shared) for name, head in self.heads.items()}

    @torch.inference_mode()
    def predict(self, images: np.ndarray, batch: int = 256) -> dict[str, list[str]]:
        """The attribute values the judge reads from (n, H, W, 3) uint8 images."""
        self.eval()
        found: dict[str, list[str]] = {name: [] for name in self.attributes}
        for start in range(0, len(images), batch):
            logits = self(to_tensor(images[start : start + batch]))
            for name, values in self.attributes.items():
                found[name] += [values[i] for i in logits[name].argmax(1).tolist()]
        return found

    def agreement(self, images: np.ndarray, scenes: Sequence[Scene]) -> dict[str, float]:
        """Per attribute, the share of images in which the judge reads what the scene asks for."""
        read = self.predict(images)
        wanted = [{**asdict(s), "count": str(s.count)} for s in scenes]
        return {
            name: float(np.mean([r == w[name] for r, w in zip(read[name], wanted, strict=True)]))
            for name in self.attributes
        }

    def save(self, directory: Path, card: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        record = {"format": JUDGE_FORMAT, "config": self.config, "attributes": self.attributes, "card": card}
        (directory / CONFIG).write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, attributes: dict[str, tuple[str, ...]] = ATTRIBUTES) -> Judge:
        record = json.loads((Path(directory) / CONFIG).read_text())
        if record.get("format") != JUDGE_FORMAT:
            raise ValueError(f"{directory}: not a judge (format {record.get('format')!r})")
        if {k: tuple(v) for k, v in record["attributes"].items()} != attributes:
            raise ValueError(f"{directory}: the judge was trained for other attributes")
        judge = cls(**record["config"], attributes=attributes)
        state = {k: v.float() for k, v in load_file(str(Path(directory) / WEIGHTS)).items()}
        judge.load_state_dict(state)
        return judge.eval()


@dataclass(frozen=True)
class JudgeRecipe:
    """How the shipped judge is trained (the card states it)."""

    train_images: int = 24_000
    validation_images: int = 2_000
    epochs: int = 4
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0
    width: int = 32
    hidden: int = 128


def train_judge(
    recipe: JudgeRecipe, progress: Callable[[str], None] | None = None
) -> tuple[Judge, dict[str, Any]]:
    """Train on the judge split, report per-attribute accuracy on the validation split."""
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    pairs = split_scenes("judge", recipe.train_images)
    images = to_tensor(render_batch(pairs))
    labels = {name: torch.tensor([labels_of(s)[name] for s, _ in pairs]) for name in ATTRIBUTES}
    judge = Judge(recipe.width, recipe.hidden)
    steps = recipe.epochs * math.ceil(len(pairs) / recipe.batch)
    optimiser = torch.optim.AdamW(judge.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, recipe.lr, total_steps=steps)
    generator = torch.Generator().manual_seed(recipe.seed)
    losses = []
    for epoch in range(recipe.epochs):
        judge.train()
        order = torch.randperm(len(pairs), generator=generator)
        for start in range(0, len(pairs), recipe.batch):
            index = order[start : start + recipe.batch]
            logits = judge(images[index])
            loss = sum(F.cross_entropy(logits[name], labels[name][index]) for name in ATTRIBUTES)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        if progress is not None:
            progress(f"epoch {epoch + 1}/{recipe.epochs}: loss {np.mean(losses[-50:]):.4f}")
    validation = split_scenes("validation", recipe.validation_images)
    accuracy = judge.agreement(render_batch(validation), [s for s, _ in validation])
    card = {
        "recipe": asdict(recipe),
        "validation_accuracy": accuracy,
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-50:])),
        "parameters": sum(p.numel() for p in judge.parameters()),
        "train_s": time.perf_counter() - started,
    }
    return judge, card
