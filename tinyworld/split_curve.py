"""Accuracy against the split point, measured: the curve the offloading scheduler trades on.

A personalised request of T steps split at s runs steps [0, s) on the edge's shared base model and
steps [s, T) on the user's device with the user's personal model (the base plus their LoRA adapter);
s = 0 is the personal model throughout, which is also what the edge computes when it runs a request
whole with the adapter applied. For every split point the same prompts (scenes of a split, each with
its own sampler seed) are generated that way for several users, each with their own style, and every
image is scored twice:

- prompt fidelity: the evaluator's CLIP score of the image against its prompt;
- personal fidelity: the share of images the style judge reads as drawn in the user's style.

Accuracy is their product. The base phase is shared by every user and split point (it is the same
computation), so it runs once and its latent is kept at each split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from diffusers import StableDiffusionPipeline

from services.executor import split_phase
from tinyworld.judge import Judge
from tinyworld.personal import AdapterBank, style_share
from tinyworld.scenes import RESOLUTION, split_scenes
from tinyworld.scorer import score_images

STEPS = 20  # the tiny world's default step count for a personalised request
SPLITS = tuple(range(0, STEPS + 1, 2))


@dataclass(frozen=True)
class SplitCurve:
    """Per split point, pooled over users: mean CLIP score and personal fidelity; and per user."""

    steps: int
    samples: int  # prompts per user and split point
    split_set: str
    users: dict[str, str]  # user -> style
    splits: list[int]
    clip: list[float]
    personal: list[float]
    per_user: dict[str, dict[str, list[float]]]  # user -> {"clip": [...], "personal": [...]}
    base_personal: dict[str, float]  # per user: the style share of the base model's own images
    wall_s: float

    def points(self) -> list[dict[str, float]]:
        """The bench's `split_curve` rows."""
        return [
            {"split": s, "clip": c, "personal": p, "accuracy": c * p}
            for s, c, p in zip(self.splits, self.clip, self.personal, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "points": self.points()}


def measure_split_curve(
    pipeline: StableDiffusionPipeline,
    bank: AdapterBank,
    users: dict[str, str],
    style_judge: Judge,
    scorer: tuple[Any, Callable[[list[str]], Any]],
    samples: int = 60,
    steps: int = STEPS,
    splits: Sequence[int] = SPLITS,
    split_set: str = "validation",
    progress: Callable[[str], None] | None = None,
) -> SplitCurve:
    """`users` maps each user to their style; the bank holds each user's adapter."""
    started = time.perf_counter()
    pairs = split_scenes(split_set, samples)  # type: ignore[arg-type]
    prompts, seeds = [scene.caption for scene, _ in pairs], [seed for _, seed in pairs]
    base_at = base_latents(pipeline, bank, prompts, seeds, steps, splits)
    base_images = split_phase.decode(pipeline, split_phase.advance(pipeline, base_at[max(splits)], steps))
    per_user: dict[str, dict[str, list[float]]] = {}
    for user, style in users.items():
        bank.use(user)
        clip, personal = [], []
        for s in splits:
            images = split_phase.decode(pipeline, split_phase.advance(pipeline, base_at[s], steps))
            clip.append(float(np.mean(score_images(scorer[0], scorer[1], images, prompts))))
            personal.append(style_share(style_judge, images, style))
        per_user[user] = {"clip": clip, "personal": personal}
        if progress is not None:
            shares = " ".join(f"{s}:{p:.2f}" for s, p in zip(splits, personal, strict=True))
            progress(f"{user} ({style}): personal fidelity by split {shares}")
    bank.use(None)
    return SplitCurve(
        steps=steps,
        samples=samples,
        split_set=split_set,
        users=dict(users),
        splits=list(splits),
        clip=_pooled(per_user, "clip"),
        personal=_pooled(per_user, "personal"),
        per_user=per_user,
        base_personal={user: style_share(style_judge, base_images, style) for user, style in users.items()},
        wall_s=time.perf_counter() - started,
    )


def base_latents(
    pipeline: StableDiffusionPipeline,
    bank: AdapterBank,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    splits: Sequence[int],
) -> dict[int, split_phase.Phase]:
    """The base model's phase after each split point, from one run of its steps."""
    bank.use(None)
    phase = split_phase.begin(pipeline, prompts, seeds, steps, RESOLUTION)
    at: dict[int, split_phase.Phase] = {}
    for s in sorted(splits):
        phase = split_phase.advance(pipeline, phase, s)
        at[s] = phase
    return at


def _pooled(per_user: dict[str, dict[str, list[float]]], name: str) -> list[float]:
    return [float(v) for v in np.mean([curves[name] for curves in per_user.values()], axis=0)]
