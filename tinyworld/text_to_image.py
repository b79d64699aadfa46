"""The tiny world's text-to-image model: a diffusers Stable Diffusion pipeline trained on 2 cores.

Its parts are SD 1.5's in miniature: the autoencoder (`tinyworld/vae.py`, 32 px to 16x16x4 latents),
the pretrained CLIP text encoder and tokenizer (`tinyworld/text_encoder.py`), a `UNet2DConditionModel`
that reads the text through cross-attention, and SD 1.5's DDIM noise schedule. It is saved with
`save_pretrained`, so an executor loads it from `EAT_MODELS_DIR/<model>/` through the code that loads
SD 1.5, patch-parallel gangs included (one downsampling: latent bands of 2 rows, gangs of up to 8).

The UNet learns to predict the noise (SD 1.5's objective) on latents of the `train` split with the
text encoder frozen, drops the caption 10% of the time so classifier-free guidance works, and weighs
timesteps by min-SNR (gamma 5), which converges faster at this scale.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from services.executor.diffusers_runner import GUIDANCE_SCALE  # images as the executors make them
from services.executor.tiny import SCHEDULER_CONFIG as SD15_SCHEDULER_CONFIG
from services.executor.tiny import assemble_pipeline
from tinyworld.judge import Judge, to_tensor
from tinyworld.scenes import RESOLUTION, Scene, render_batch, split_scenes
from tinyworld.text_encoder import TEXT_CONFIG, TextEncoderRecipe, build_tokenizer, encode, train_text_encoder
from tinyworld.training import card_basics, fit
from tinyworld.vae import VaeRecipe, load_vae, train_vae

LATENT_SIZE = RESOLUTION // 2
# SD 1.5's DDIM schedule with trailing timestep spacing: the first step starts from pure noise (t = 999)
# whatever the step count. With SD's leading spacing a 1-step image starts at t = 1 and image quality
# peaks near 12 steps and then falls a little; with trailing spacing it rises with every step count.
SCHEDULER_CONFIG: dict[str, Any] = {**SD15_SCHEDULER_CONFIG, "timestep_spacing": "trailing"}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (64, 128),
    "layers_per_block": 2,
    # Cross-attention at 8x8 and in the middle block: the prompt says what and roughly where; the
    # 16x16 level draws edges, which needs convolutions, not text.
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": TEXT_CONFIG["hidden_size"],
    "attention_head_dim": 4,  # diffusers reads it as the number of heads
    "norm_num_groups": 32,
}


@dataclass(frozen=True)
class UnetRecipe:
    train_images: int = 40_000
    steps: int = 2_400
    batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 100
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    seed: int = 0
    eval_prompts: int = 60
    eval_steps: int = 20


def build_unet(seed: int = 0) -> UNet2DConditionModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**UNET_CONFIG)


def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The latent means of images in [-1, 1], unscaled."""
    with torch.inference_mode():
        return torch.cat(
            [vae.encode(images[i : i + batch]).latent_dist.mode() for i in range(0, len(images), batch)]
        )


def assemble(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer
) -> StableDiffusionPipeline:
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, DDIMScheduler(**SCHEDULER_CONFIG))


def train_unet(
    recipe: UnetRecipe,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    judge: Judge | None = None,
    progress: Callable[[str], None] | None = None,
    eval_every: int = 0,
) -> tuple[StableDiffusionPipeline, dict[str, Any]]:
    """Train the UNet; returns the assembled pipeline (the VAE's scaling factor set so latents have
    unit variance, as SD's 0.18215 does for its own) and a card."""
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    pairs = split_scenes("train", recipe.train_images)
    latents = encode_latents(vae, to_tensor(render_batch(pairs)))
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    latents = latents * vae.config.scaling_factor
    captions = sorted({scene.caption for scene, _ in pairs})
    caption_of = torch.tensor([captions.index(scene.caption) for scene, _ in pairs])
    # The text encoder is frozen: every caption (and the empty prompt, last) is encoded once.
    states = encode(text_encoder, tokenizer, captions + [""])
    unet = build_unet(recipe.seed)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=recipe.snr_gamma) / snr
    noise_rng = torch.Generator().manual_seed(recipe.seed + 1)
    evaluations: list[dict[str, Any]] = []

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=noise_rng)
        t = torch.randint(0, len(alphas), (len(index),), generator=noise_rng)
        dropped = torch.rand(len(index), generator=noise_rng) < recipe.caption_dropout
        text = states[torch.where(dropped, len(captions), caption_of[index])]
        noisy = scheduler.add_noise(clean, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predicted = unet(noisy, t, text).sample
        per_item = (predicted.float() - noise).pow(2).mean(dim=(1, 2, 3))
        return (weights[t] * per_item).mean()

    def evaluate(step: int) -> None:
        if judge is None:
            return
        pipeline = assemble(unet, vae, text_encoder, tokenizer)
        report = judge_generated(pipeline, judge, recipe.eval_prompts, recipe.eval_steps)
        evaluations.append({"step": step, **report})
        if progress is not None:
            progress(f"step {step}: judge at {recipe.eval_steps} steps " + _fmt(report))

    every = (eval_every, evaluate) if eval_every else None
    losses = fit(unet, loss_of, len(pairs), recipe, recipe.weight_decay, progress, 100, every)
    pipeline = assemble(unet, vae, text_encoder, tokenizer)
    card = {**card_basics(recipe, unet, losses, started), "evaluations": evaluations}
    if judge is not None:
        card["judge"] = judge_generated(pipeline, judge, 200, recipe.eval_steps)
    return pipeline, card


def _fmt(report: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.2f}" for name, value in report.items())


def evaluation_scenes(n: int, split: str = "validation") -> list[tuple[Scene, int]]:
    return split_scenes(split, n)  # type: ignore[arg-type]


def generate(
    pipeline: StableDiffusionPipeline,
    prompts: Sequence[str],
    steps: int,
    seeds: Sequence[int],
    guidance_scale: float = GUIDANCE_SCALE,
    batch: int = 50,
) -> np.ndarray:
    """(n, 32, 32, 3) uint8 images, one per prompt, each from its own seeded noise (a CPU generator per
    image, as the executor seeds its tasks)."""
    pipeline.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds[start : start + batch]]
        with torch.inference_mode():
            out = pipeline(
                chunk,
                height=RESOLUTION,
                width=RESOLUTION,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                generator=generators,
                output_type="np",
            )
        images.append((out.images * 255).round().clip(0, 255).astype(np.uint8))
    return np.concatenate(images)


def judge_generated(
    pipeline: StableDiffusionPipeline, judge: Judge, n: int, steps: int, split: str = "validation"
) -> dict[str, float]:
    """The judge's agreement with the prompts of `n` scenes of a split, generated in `steps` steps."""
    pairs = evaluation_scenes(n, split)
    scenes = [scene for scene, _ in pairs]
    images = generate(pipeline, [scene.caption for scene in scenes], steps, [seed for _, seed in pairs])
    return judge.agreement(images, scenes)


def save_pipeline(pipeline: StableDiffusionPipeline, directory: Path) -> Path:
    """A diffusers pipeline directory in half precision (safetensors); the pipeline stays float32."""
    pipeline.to(torch.float16)
    try:
        pipeline.save_pretrained(str(directory), safe_serialization=True)
    finally:
        pipeline.to(torch.float32)
    return directory


def load_pipeline(directory: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(
        str(directory), torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )


@dataclass(frozen=True)
class TinyRecipe:
    """The whole pipeline's recipe: the autoencoder's (None: reuse a trained one), the text encoder's
    and the UNet's."""

    vae: VaeRecipe | None
    text: TextEncoderRecipe
    unet: UnetRecipe


def train_tiny(
    recipe: TinyRecipe,
    vae_dir: Path | None,
    judge: Judge,
    progress: Callable[[str], None] | None = None,
    eval_every: int = 0,
) -> tuple[StableDiffusionPipeline, dict[str, Any]]:
    """Train the pipeline's parts in order: autoencoder (or load `vae_dir`), text encoder, UNet."""
    say = progress or (lambda _line: None)
    if recipe.vae is None:
        if vae_dir is None:
            raise ValueError("no autoencoder recipe and no trained autoencoder to reuse")
        vae, vae_card = load_vae(vae_dir), {"reused": str(vae_dir)}
    else:
        say("autoencoder")
        vae, vae_card = train_vae(recipe.vae, judge, progress)
    say("text encoder (contrastive pretraining)")
    with tempfile.TemporaryDirectory(prefix="eat-tokenizer-") as work_dir:
        tokenizer = build_tokenizer(Path(work_dir))
    text_encoder, text_card = train_text_encoder(recipe.text, tokenizer, progress)
    say("UNet")
    pipeline, unet_card = train_unet(recipe.unet, vae, text_encoder, tokenizer, judge, progress, eval_every)
    return pipeline, {"vae": vae_card, "text_encoder": text_card, "unet": unet_card}
