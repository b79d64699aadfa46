"""Test images and prompts for the evaluator, and storing an image the way an executor would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

PROMPTS = ["a red fox in the snow", "a blue car on a bridge", "a bowl of ramen", "a lighthouse at dusk"]


def candidate_images(count: int = 4) -> list[Image.Image]:
    """Distinct structured images (not square, so preprocessing resizes and crops)."""
    rng = np.random.default_rng(123)
    images = []
    for index in range(count):
        base = rng.integers(0, 256, size=3)
        stripes = (np.arange(96)[None, :, None] // (4 + 4 * index)) % 2 * 90
        pixels = np.clip(base[None, None, :] + stripes + rng.integers(0, 30, size=(80, 96, 3)), 0, 255)
        images.append(Image.fromarray(pixels.astype(np.uint8)))
    return images


def store_png(store: Path, name: str, image: Image.Image) -> tuple[str, str]:
    """Write `image` as a PNG in the result store; returns its file:// URI and SHA-256."""
    path = store / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path.resolve().as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()
