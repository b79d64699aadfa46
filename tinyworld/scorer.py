"""The tiny world's CLIP scorer: a small open_clip model trained contrastively on rendered scenes.

It is a standard open_clip model (a custom config, no new code): a ViT over 8 px patches of the 32 px
image and a text transformer over open_clip's BPE tokens, saved as an open_clip model directory
(`open_clip_config.json` + `open_clip_model.safetensors`), the layout of a real open_clip checkpoint. The
evaluator loads it with `EAT_CLIP_MODEL=local-dir:<dir>` through `open_clip.create_model`, exactly as
it would load ViT-B-32's weights from a local directory.

It trains on the `scorer` split (its own seeds, every colour-shape pair), which the text-to-image model
never sees, so the evaluator does not grade images with what made them.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

from tinyworld.judge import to_tensor
from tinyworld.scenes import COLOURS, POSITIONS, RESOLUTION, SHAPES, Scene, render_batch, split_scenes
from tinyworld.training import card_basics, clip_loss, fit

CONFIG_FILE, WEIGHTS_FILE = "open_clip_config.json", "open_clip_model.safetensors"
CONTEXT_LENGTH = 24  # tokens; the longest caption has 16 with its start and end tokens

MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": RESOLUTION, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}
# Pixels in [0, 1] become [-1, 1], as the text-to-image model's images are; 32 px in, no crop needed.
PREPROCESS_CFG: dict[str, Any] = {
    "size": RESOLUTION,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


@dataclass(frozen=True)
class ScorerRecipe:
    """How the shipped scorer is trained (its card states it)."""

    train_images: int = 48_000
    steps: int = 2_400
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 200
    seed: int = 0
    eval_images: int = 1_000


def build_model(seed: int = 0) -> open_clip.CLIP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**MODEL_CFG)


def tokenizer() -> open_clip.SimpleTokenizer:
    return open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)


def save_scorer(model: open_clip.CLIP, directory: Path, card: dict[str, Any]) -> Path:
    """An open_clip model directory: config (model and preprocessing) and safetensors weights."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG, "card": card}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory


def load_scorer(directory: Path) -> tuple[torch.nn.Module, Callable[[list[str]], torch.Tensor]]:
    """The model and tokenizer as the evaluator gets them: open_clip's own local-directory loading."""
    name = f"local-dir:{directory}"
    model = open_clip.create_model(name, device="cpu")
    return model.float().eval(), open_clip.get_tokenizer(name)


def contrastive_loss(model: open_clip.CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch (pairs that share a caption count as matches)."""
    image_emb = model.encode_image(images, normalize=True)
    text_emb = model.encode_text(tokens, normalize=True)
    return clip_loss(image_emb, text_emb, model.logit_scale.exp(), tokens)


def train_scorer(
    recipe: ScorerRecipe, progress: Callable[[str], None] | None = None
) -> tuple[open_clip.CLIP, dict[str, Any]]:
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    pairs = split_scenes("scorer", recipe.train_images)
    images = to_tensor(render_batch(pairs))
    tokens = tokenizer()([scene.caption for scene, _ in pairs])
    model = build_model(recipe.seed)
    losses = fit(
        model,
        lambda index: contrastive_loss(model, images[index], tokens[index]),
        len(pairs),
        recipe,
        recipe.weight_decay,
        progress,
    )
    card = {
        **card_basics(recipe, model, losses, started),
        **retrieval_report(model, tokenizer(), recipe.eval_images),
    }
    return model, card


def one_attribute_off(scene: Scene, rng: random.Random) -> list[Scene]:
    """Scenes that differ from `scene` in exactly one of colour, shape or position, one of each."""
    colour = rng.choice([c for c in COLOURS if c != scene.colour])
    shape = rng.choice([s for s in SHAPES if s != scene.shape])
    position = rng.choice([p for p in POSITIONS if p != scene.position])
    return [
        dataclasses.replace(scene, colour=colour),
        dataclasses.replace(scene, shape=shape),
        dataclasses.replace(scene, position=position),
    ]


@torch.inference_mode()
def retrieval_report(
    model: torch.nn.Module, tokenize: Callable[[list[str]], torch.Tensor], n: int, split: str = "test"
) -> dict[str, Any]:
    """On `n` scenes of a split (by default the held-out colour-shape pairs): the mean score of an image
    with its own caption and with captions one attribute off, and how often its own scores highest."""
    pairs = split_scenes(split, n)  # type: ignore[arg-type]
    rng = random.Random(7)
    image_emb = model.encode_image(to_tensor(render_batch(pairs)), normalize=True)
    own, off, wins = [], [], []
    for (scene, _), emb in zip(pairs, image_emb, strict=True):
        captions = [scene.caption] + [s.caption for s in one_attribute_off(scene, rng)]
        scores = (model.encode_text(tokenize(captions), normalize=True) @ emb).tolist()
        own.append(scores[0])
        off.extend(scores[1:])
        wins.append(scores[0] > max(scores[1:]))
    return {
        "eval_split": split,
        "own_caption_score": float(np.mean(own)),
        "one_off_caption_score": float(np.mean(off)),
        "own_caption_ranked_first": float(np.mean(wins)),
    }


def score_images(
    model: torch.nn.Module,
    tokenize: Callable[[list[str]], torch.Tensor],
    images: np.ndarray,
    prompts: Sequence[str],
) -> list[float]:
    """CLIP score (cosine similarity) of each (n, H, W, 3) uint8 image with its prompt."""
    with torch.inference_mode():
        image_emb = model.encode_image(to_tensor(images), normalize=True)
        text_emb = model.encode_text(tokenize(list(prompts)), normalize=True)
    return (image_emb * text_emb).sum(-1).tolist()
