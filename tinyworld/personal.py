"""Personal models: the shared text-to-image pipeline plus one user's LoRA adapter.

A user owns a style (`tinyworld.scenes.STYLES`: how their pictures are drawn, never what a caption
says). Their personal model is the base pipeline with a low-rank adapter (peft LoRA, the layout
diffusers reads with `load_lora_weights`) on the UNet's attention projections and convolutions,
trained on a handful of that user's example images with the base model frozen. Adapters are small
files kept per user; a resident base pipeline loads, switches between and unloads them without
reloading its own weights (`AdapterBank`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from tinyworld.judge import Judge, to_tensor
from tinyworld.scenes import STYLES, render, render_batch, split_scenes
from tinyworld.text_encoder import encode
from tinyworld.text_to_image import encode_latents, generate
from tinyworld.training import fit
from tinyworld.vae import round_trip, to_uint8

ADAPTER_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers writes and reads
CARD_FILE = "adapter.json"
# Where the adapter sits: every attention projection and the ResNet convolutions, so it can change how
# edges and fills are drawn, not only where things go.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


@dataclass(frozen=True)
class PersonalRecipe:
    examples: int = 32  # the user's example images (a handful, as a user would give)
    steps: int = 300
    batch: int = 16
    lr: float = 5e-3
    # Train on the less noisy half of the schedule only: a style is in how things are drawn, which the
    # late steps decide; at high noise the loss is all layout, which the base model already knows, and
    # spending the adapter's updates there left styles faint (in a trial, one pastel user's images read
    # as pastel 0.15 of the time with uniform timesteps, 0.70 with this; docs/models.md).
    max_timestep: int = 500
    rank: int = 8
    alpha: float = 8.0  # the adapter's output is scaled by alpha / rank
    warmup: int = 10
    seed: int = 0


def user_examples(user: str, n: int) -> list[tuple[Any, int]]:
    """The user's example scenes: `n` scenes of the train split at an offset fixed by the user's name,
    so different users draw different examples."""
    offset = sum(user.encode()) * 1_000 % 20_000
    return split_scenes("train", offset + n)[offset:]


def train_adapter(
    pipeline: StableDiffusionPipeline,
    user: str,
    style: str,
    recipe: PersonalRecipe,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Add a LoRA adapter named `user` to the pipeline's UNet and train it on the user's examples with
    the base weights frozen; returns the adapter's card. The adapter stays loaded and active."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; one of {STYLES}")
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    pairs = user_examples(user, recipe.examples)
    latents = encode_latents(pipeline.vae, to_tensor(render_batch(pairs, style=style)))
    latents = latents * pipeline.vae.config.scaling_factor
    states = encode(pipeline.text_encoder, pipeline.tokenizer, [scene.caption for scene, _ in pairs])
    unet = pipeline.unet
    unet.requires_grad_(False)
    config = LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, target_modules=list(TARGET_MODULES))
    unet.add_adapter(config, user)
    unet.set_adapter(user)
    scheduler = pipeline.scheduler
    alphas = scheduler.alphas_cumprod
    noise_rng = torch.Generator().manual_seed(recipe.seed + 1)

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=noise_rng)
        t = torch.randint(0, min(recipe.max_timestep, len(alphas)), (len(index),), generator=noise_rng)
        predicted = unet(scheduler.add_noise(clean, noise, t), t, states[index]).sample
        return torch.nn.functional.mse_loss(predicted, noise)

    losses = fit(unet, loss_of, len(pairs), recipe, 0.0, progress, report_every=50)
    return {
        "user": user,
        "style": style,
        "recipe": asdict(recipe),
        "first_loss": losses[0],
        "last_loss": sum(losses[-20:]) / len(losses[-20:]),
        "adapter_parameters": sum(p.numel() for p in unet.parameters() if p.requires_grad),
        "train_s": time.perf_counter() - started,
    }


def save_adapter(pipeline: StableDiffusionPipeline, user: str, card: dict[str, Any], directory: Path) -> Path:
    """The user's adapter as diffusers writes LoRA weights (safetensors) plus its card (JSON)."""
    directory.mkdir(parents=True, exist_ok=True)
    layers = get_peft_model_state_dict(pipeline.unet, adapter_name=user)
    StableDiffusionPipeline.save_lora_weights(
        str(directory), unet_lora_layers=layers, weight_name=ADAPTER_FILE, safe_serialization=True
    )
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return directory


class AdapterBank:
    """Users' adapters on one resident base pipeline: load once, switch per request, unload; the base
    weights are never reloaded."""

    def __init__(self, pipeline: StableDiffusionPipeline) -> None:
        self.pipeline = pipeline
        self.loaded: dict[str, Path | None] = {}  # user -> where the adapter came from

    def load(self, user: str, directory: Path) -> None:
        if user in self.loaded:
            return
        self.pipeline.load_lora_weights(str(directory), weight_name=ADAPTER_FILE, adapter_name=user)
        self.loaded[user] = directory

    def adopt(self, user: str) -> None:
        """Count an adapter already in the pipeline (trained in place) as loaded."""
        if user not in self.pipeline.get_list_adapters().get("unet", []):
            raise KeyError(f"the pipeline holds no adapter {user!r}")
        self.loaded[user] = None

    def use(self, user: str | None) -> None:
        """Apply `user`'s adapter alone, or none (the base model) for None."""
        if user is None:
            self.pipeline.disable_lora()
            return
        if user not in self.loaded:
            raise KeyError(f"no adapter loaded for user {user!r}")
        self.pipeline.enable_lora()
        self.pipeline.set_adapters([user])

    def unload(self, user: str) -> None:
        self.pipeline.delete_adapters(user)
        self.loaded.pop(user, None)


# ----- the style judge: personal fidelity, read from an image ----------------------------------------
STYLE_ATTRIBUTES: dict[str, tuple[str, ...]] = {"style": STYLES}


@dataclass(frozen=True)
class StyleJudgeRecipe:
    train_images: int = 10_000
    steps: int = 600
    batch: int = 128
    lr: float = 2e-3
    warmup: int = 30
    seed: int = 0
    eval_images: int = 1_000


def decoded(vae: AutoencoderKL, images: np.ndarray) -> np.ndarray:
    """Images as they come out of the pipeline's VAE (encoded and decoded): what the judge must read in
    generated images, where fine strokes such as stripes and shadows survive only in part."""
    return to_uint8(round_trip(vae, to_tensor(images)))


def styled_scenes(split: str, n: int) -> tuple[np.ndarray, list[str]]:
    """`n` scenes of a split, scene i drawn in style STYLES[i % 5]: (images, styles)."""
    pairs = split_scenes(split, n)  # type: ignore[arg-type]
    styles = [STYLES[i % len(STYLES)] for i in range(n)]
    images = np.stack(
        [
            np.asarray(render(scene, seed, style=style))
            for (scene, seed), style in zip(pairs, styles, strict=True)
        ]
    )
    return images, styles


def train_style_judge(
    recipe: StyleJudgeRecipe, vae: AutoencoderKL, progress: Callable[[str], None] | None = None
) -> tuple[Judge, dict[str, Any]]:
    """The judge's network with one head, the style, trained on the judge split in every style as the
    pipeline's VAE decodes it (generated images always pass through it)."""
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    images, styles = styled_scenes("judge", recipe.train_images)
    pixels = to_tensor(decoded(vae, images))
    labels = torch.tensor([STYLES.index(style) for style in styles])
    judge = Judge(attributes=STYLE_ATTRIBUTES)
    losses = fit(
        judge,
        lambda index: torch.nn.functional.cross_entropy(judge(pixels[index])["style"], labels[index]),
        len(labels),
        recipe,
        0.0,
        progress,
    )
    held_images, held_styles = styled_scenes("validation", recipe.eval_images)
    read = judge.predict(decoded(vae, held_images))["style"]
    return judge, {
        "recipe": asdict(recipe),
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-50:])),
        "validation_accuracy": float(np.mean([r == w for r, w in zip(read, held_styles, strict=True)])),
        "validation_per_style": {
            style: float(np.mean([r == w for r, w in zip(read, held_styles, strict=True) if w == style]))
            for style in STYLES
        },
        "parameters": sum(p.numel() for p in judge.parameters()),
        "train_s": time.perf_counter() - started,
    }


def style_share(style_judge: Judge, images: np.ndarray, style: str) -> float:
    """Personal fidelity: the share of images the style judge reads as drawn in `style`."""
    return float(np.mean([read == style for read in style_judge.predict(images)["style"]]))


def personal_report(
    pipeline: StableDiffusionPipeline, user: str, style: str, style_judge: Judge, n: int = 40, steps: int = 20
) -> dict[str, Any]:
    """How often the style judge reads the user's style in images of `n` validation prompts, from the
    base model and with the user's adapter (the pipeline holds it)."""
    pairs = split_scenes("validation", n)
    prompts, seeds = [scene.caption for scene, _ in pairs], [seed for _, seed in pairs]
    bank = AdapterBank(pipeline)
    bank.adopt(user)
    bank.use(None)
    base = style_share(style_judge, generate(pipeline, prompts, steps, seeds), style)
    bank.use(user)
    personal = style_share(style_judge, generate(pipeline, prompts, steps, seeds), style)
    return {
        "eval_prompts": n,
        "eval_steps": steps,
        "style_share_base": base,
        "style_share_personal": personal,
    }
