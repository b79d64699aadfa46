"""Image quality against denoising steps, measured: the curve the scheduler trades on.

For a fixed set of prompts (scenes of a split, each with its own sampler seed) the text-to-image
pipeline generates one image per prompt at each step count with its own scheduler. Each image is
scored twice: by the evaluator's CLIP scorer (cosine similarity with its prompt, what the live system
rewards) and by the judge (does the image show the colour, shape and position the prompt asks for).
The judge and the scorer are separate models, and neither made the images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from diffusers import StableDiffusionPipeline

from tinyworld.judge import ATTRIBUTES, Judge
from tinyworld.scenes import split_scenes
from tinyworld.scorer import score_images
from tinyworld.text_to_image import GUIDANCE_SCALE, generate

STEP_COUNTS = (1, 2, 3, 5, 8, 12, 20, 30)
JUDGED = ("color", "shape", "position")  # the bench's names; the judge calls colour "colour"
# Chance accuracy of a judge reading an image that ignores its prompt: one in the number of values.
CHANCE = {"color": 1 / 6, "shape": 1 / 4, "position": 1 / 5}
TARGETS = {"color": 0.90, "shape": 0.85, "position": 0.80, "clip_spearman": 0.9}


@dataclass(frozen=True)
class QualityCurve:
    """The `eat bench quality --json` record: per step count, mean CLIP score and judge accuracy."""

    model: str
    samples: int
    split: str
    guidance_scale: float
    steps: list[int]
    clip: list[float]
    judge: dict[str, list[float]]
    judge_all: dict[str, list[float]]  # every attribute the judge reads
    wall_s_per_image: list[float]

    def clip_spearman(self) -> float:
        return spearman(self.steps, self.clip)

    def meets_targets(self) -> dict[str, bool]:
        met = {name: self.judge[name][-1] >= TARGETS[name] for name in JUDGED}
        return {**met, "clip_spearman": self.clip_spearman() >= TARGETS["clip_spearman"]}

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "clip_spearman": self.clip_spearman(),
            "chance": CHANCE,
            "targets": TARGETS,
            "meets_targets": self.meets_targets(),
        }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(values: Sequence[float]) -> np.ndarray:
        array = np.asarray(values, dtype=float)
        order = array.argsort(kind="stable")
        ranked = np.empty(len(array))
        ranked[order] = np.arange(len(array), dtype=float)
        for value in np.unique(array):  # ties share their mean rank
            ranked[array == value] = ranked[array == value].mean()
        return ranked

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def measure_quality(
    pipeline: StableDiffusionPipeline,
    judge: Judge,
    scorer: tuple[Any, Callable[[list[str]], Any]],
    model: str,
    samples: int = 200,
    steps: Sequence[int] = STEP_COUNTS,
    split: str = "validation",
    guidance_scale: float = GUIDANCE_SCALE,
    progress: Callable[[str], None] | None = None,
) -> QualityCurve:
    pairs = split_scenes(split, samples)  # type: ignore[arg-type]
    scenes = [scene for scene, _ in pairs]
    prompts = [scene.caption for scene in scenes]
    seeds = [seed for _, seed in pairs]
    clip, judged, walls = [], {name: [] for name in ATTRIBUTES}, []
    for count in steps:
        started = time.perf_counter()
        images = generate(pipeline, prompts, count, seeds, guidance_scale)
        walls.append((time.perf_counter() - started) / len(prompts))
        clip.append(float(np.mean(score_images(scorer[0], scorer[1], images, prompts))))
        for name, value in judge.agreement(images, scenes).items():
            judged[name].append(value)
        if progress is not None:
            read = " ".join(f"{name} {judged[name][-1]:.2f}" for name in ("colour", "shape", "position"))
            progress(f"{count:>2} steps: CLIP {clip[-1]:.3f}, judge {read}")
    bench_names = {"color": "colour", "shape": "shape", "position": "position"}
    return QualityCurve(
        model=model,
        samples=samples,
        split=split,
        guidance_scale=guidance_scale,
        steps=list(steps),
        clip=clip,
        judge={name: judged[bench_names[name]] for name in JUDGED},
        judge_all=judged,
        wall_s_per_image=walls,
    )
