"""A tiny Stable Diffusion pipeline for the patch-parallel tests, built from configs with seeded weights.

Real diffusers/transformers classes in miniature: a UNet with cross-attention at full resolution and in
the middle block, one downsampling (band heights are multiples of 2), 8 GroupNorm groups; a small KL
VAE; a small CLIP text encoder. No tokenizer: prompts are seeded random token ids through the real text
encoder, passed to the pipeline as `prompt_embeds` (nothing is downloaded). Building it twice, in any
process, gives the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from services.executor import tiny
from services.executor.parallel import PromptEmbeddings

# services.executor.tiny's models, changed where these tests need it. 8 GroupNorm groups instead of 32:
# each group then spans several channels (as in SD), so PatchGroupNorm's per-group statistics are tested
# as such, and the narrow VAE below allows no more. The UNet's default latent is 16 rows (128 px); the
# tests pass height and width explicitly, it only keeps the config as the reference latents were made.
UNET_CONFIG: dict[str, Any] = tiny.UNET_CONFIG | {"sample_size": 16, "norm_num_groups": 8}
# SD 1.x's layout in miniature: three downsamplings (bands are multiples of 8 latent rows, 1 row at the
# lowest level for the thinnest band), cross-attention transformer blocks on the first three levels.
SD_LAYOUT_UNET_CONFIG: dict[str, Any] = UNET_CONFIG | {
    "block_out_channels": (32, 32, 64, 64),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
UNET_CONFIGS: dict[str, dict[str, Any]] = {"tiny": UNET_CONFIG, "sd-layout": SD_LAYOUT_UNET_CONFIG}
# tiny.py's four blocks (SD's factor 8 between pixels and latent rows), narrower for speed: 8 channels,
# so 8 groups. sample_size back to AutoencoderKL's default (32), as this VAE was always built.
VAE_CONFIG: dict[str, Any] = tiny.VAE_CONFIG | {
    "sample_size": 32,
    "block_out_channels": (8, 8, 8, 8),
    "norm_num_groups": 8,
}
# No tokenizer here (prompts are random token ids), so the vocabulary and special ids are set directly.
TEXT_CONFIG: dict[str, Any] = tiny.TEXT_CONFIG | {
    "vocab_size": 1000,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
PROMPT_TOKENS = 8
LATENT_UNIT = 2  # 2 ** (one downsampling)


def build_pipeline(seed: int = 0, unet_layout: str = "tiny") -> StableDiffusionPipeline:
    """The tiny pipeline with the UNet of `unet_layout` (a key of UNET_CONFIGS), weights drawn from
    `seed` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_CONFIGS[unet_layout])
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=None,
        unet=unet.eval(),
        scheduler=DDIMScheduler(**tiny.SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def prompt_embeddings(pipe: StableDiffusionPipeline, seed: int = 7) -> PromptEmbeddings:
    """Embeddings of a seeded random 'prompt' and 'negative prompt' through the real text encoder."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TEXT_CONFIG["vocab_size"], (2, PROMPT_TOKENS), generator=generator)
    hidden = pipe.text_encoder(ids)[0]
    return PromptEmbeddings(positive=hidden[:1], negative=hidden[1:])


@torch.no_grad()
def pipeline_latents(
    pipe: StableDiffusionPipeline,
    embeddings: PromptEmbeddings,
    height: int,
    width: int,
    steps: int,
    seed: int,
) -> torch.Tensor:
    """Final latents of StableDiffusionPipeline's own loop: the single-process reference."""
    result = pipe(
        prompt_embeds=embeddings.positive,
        negative_prompt_embeds=embeddings.negative,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
    )
    return result.images
