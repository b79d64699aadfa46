"""A whole text-to-image run on one row band: the denoising loop around a patch-parallel UNet.

Every member draws the full initial noise from the same seed (identical on every rank), keeps its band,
runs the scheduler's loop with the wrapped UNet on the band (classifier-free guidance as a batch of 2,
as StableDiffusionPipeline does), and at the end all members all-gather the bands into the full latent,
which rank 0 decodes with the VAE. At world size 1 the numbers are those of the pipeline's own loop.

This is our own short loop over the pipeline's parts (scheduler config, text encoder, UNet, VAE) rather
than a patched `StableDiffusionPipeline.__call__`: the band only exists between the noise and the gather,
and the pipeline's call has no place to put either.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from services.executor.parallel.bands import BandPlan
from services.executor.parallel.patch import PatchParallelHandle

# Schedulers whose step is elementwise and draws no noise (with eta = 0): on a band they compute exactly
# the band's rows of the full step. Ancestral/SDE samplers draw noise shaped like their input, which on a
# band is not the band of the full latent's noise, so they are refused for gangs.
BAND_SAFE_SCHEDULERS = frozenset(
    {
        "DDIMScheduler",
        "PNDMScheduler",
        "EulerDiscreteScheduler",
        "LMSDiscreteScheduler",
        "HeunDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
    }
)


@dataclass(frozen=True)
class DenoiseRequest:
    """One image: its size in pixels, how many steps, the guidance scale and the noise seed."""

    height: int
    width: int
    steps: int
    seed: int
    guidance_scale: float = 7.5


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text-encoder outputs (batch, tokens, dim); `negative` is the unconditional side of guidance."""

    positive: torch.Tensor
    negative: torch.Tensor | None = None


@torch.no_grad()
def encode_prompt(
    pipe: StableDiffusionPipeline, prompt: str | list[str], negative_prompt: str | list[str] | None = None
) -> PromptEmbeddings:
    """The pipeline's own prompt encoding (tokenizer + text encoder), with the negative side."""
    positive, negative = pipe.encode_prompt(prompt, pipe.unet.device, 1, True, negative_prompt)
    return PromptEmbeddings(positive=positive, negative=negative)


@torch.no_grad()
def denoise_patch_parallel(
    pipe: StableDiffusionPipeline,
    handle: PatchParallelHandle,
    embeddings: PromptEmbeddings,
    request: DenoiseRequest,
) -> torch.Tensor:
    """Run the denoising loop on this rank's band and return the full final latent (on every rank).

    `handle` wraps `pipe.unet` for this gang (apply_patch_parallel); a fresh scheduler is built from the
    pipeline's config so concurrent or earlier runs leave no state behind."""
    comm = handle.comm
    scheduler = fresh_scheduler(pipe.scheduler, comm.world)
    unet = pipe.unet
    scheduler.set_timesteps(request.steps, device=unet.device)
    full = initial_latents(pipe, scheduler, request, embeddings.positive.shape[0])
    plan = handle.begin(full.shape[2])
    latents = full[:, :, plan.rows(comm.rank)].contiguous()
    guided = request.guidance_scale > 1 and unet.config.time_cond_proj_dim is None
    context = guidance_context(embeddings, guided)
    step_kwargs = {"eta": 0.0} if "eta" in inspect.signature(scheduler.step).parameters else {}
    for timestep in scheduler.timesteps:
        noise = predict_noise(
            unet, scheduler, latents, timestep, context, request.guidance_scale if guided else None
        )
        latents = scheduler.step(noise, timestep, latents, **step_kwargs, return_dict=False)[0]
    handle.finish()
    return gather_bands(handle, latents, plan)


def fresh_scheduler(template: SchedulerMixin, world: int) -> Any:
    """A new scheduler of the pipeline's kind and config; for a gang, one that is safe on bands."""
    if world > 1:
        kind = type(template).__name__
        config = template.config
        if kind not in BAND_SAFE_SCHEDULERS:
            raise ValueError(
                f"scheduler {kind} draws noise or mixes rows; use one of {sorted(BAND_SAFE_SCHEDULERS)}"
            )
        if config.get("thresholding", False) or "sde" in str(config.get("algorithm_type", "")):
            raise ValueError(f"scheduler {kind} with thresholding or an SDE variant cannot run on bands")
    return type(template).from_config(template.config)


def initial_latents(
    pipe: StableDiffusionPipeline, scheduler: Any, request: DenoiseRequest, batch: int
) -> torch.Tensor:
    """The full initial noise, drawn as StableDiffusionPipeline draws it (CPU generator, same seed on
    every rank, so every member holds the same latent and cuts its own band)."""
    unet = pipe.unet
    scale = pipe.vae_scale_factor
    shape = (batch, unet.config.in_channels, request.height // scale, request.width // scale)
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    noise = randn_tensor(shape, generator=generator, device=unet.device, dtype=unet.dtype)
    return noise * scheduler.init_noise_sigma


def guidance_context(embeddings: PromptEmbeddings, guided: bool) -> torch.Tensor:
    """Text context for the UNet: [unconditional, conditional] under guidance, else conditional only."""
    if not guided:
        return embeddings.positive
    if embeddings.negative is None:
        raise ValueError("classifier-free guidance needs negative (unconditional) prompt embeddings")
    return torch.cat([embeddings.negative, embeddings.positive])


def predict_noise(
    unet: torch.nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    guidance_scale: float | None,
) -> torch.Tensor:
    """One UNet call (one denoising step of the patch-parallel UNet), guidance applied."""
    model_input = torch.cat([latents] * 2) if guidance_scale is not None else latents
    model_input = scheduler.scale_model_input(model_input, timestep)
    noise = unet(model_input, timestep, encoder_hidden_states=context, return_dict=False)[0]
    if guidance_scale is None:
        return noise
    unconditional, conditional = noise.chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


def gather_bands(handle: PatchParallelHandle, band: torch.Tensor, plan: BandPlan) -> torch.Tensor:
    """The full latent from every member's final band, in row order."""
    if handle.comm.world == 1:
        return band
    return handle.comm.gather_along(band.contiguous(), 2, plan.heights)


@torch.no_grad()
def decode_images(pipe: StableDiffusionPipeline, latents: torch.Tensor, output_type: str = "pil") -> Any:
    """Decode full latents with the pipeline's VAE and post-process them as the pipeline does."""
    vae = pipe.vae
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(
        images, output_type=output_type, do_denormalize=[True] * len(images)
    )
