"""Split-point inference: a request's denoising steps run in two phases, possibly on two machines.

Steps [0, s) run on the edge's shared base model, batched across requests (one UNet forward per step
for the whole batch); the latent after step s is handed to the user's device, which runs steps
[s, T) with its personal model (the base plus the user's LoRA adapter) and decodes the image.

The loop is the Stable Diffusion pipeline's own (classifier-free guidance, the pipeline's scheduler),
written out so that it can stop and resume at any step: with a deterministic scheduler (DDIM, eta 0)
phase one to s followed by phase two from s gives the same latent as one uninterrupted run of the same
model. The same code runs the tiny world's pipeline on a CPU and a real Stable Diffusion directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from services.executor.diffusers_runner import GUIDANCE_SCALE


@dataclass
class Phase:
    """Requests in flight: their latents after `done` of `steps` steps, with their text states (the
    unconditional half first, as the pipeline stacks them for guidance)."""

    latents: torch.Tensor  # (n, 4, h, w)
    text_states: torch.Tensor  # (2n, tokens, width)
    steps: int
    done: int = 0


def begin(
    pipeline: StableDiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    resolution: int,
) -> Phase:
    """Requests at step 0: each one's starting noise from its own seeded CPU generator (as the executor
    seeds its tasks), and its prompt encoded with the pipeline's text encoder."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    return Phase(
        latents=initial_latents(pipeline, seeds, resolution),
        text_states=encode_prompts(pipeline, prompts),
        steps=steps,
    )


def initial_latents(pipeline: StableDiffusionPipeline, seeds: Sequence[int], resolution: int) -> torch.Tensor:
    scale = pipeline.vae_scale_factor
    shape = (pipeline.unet.config.in_channels, resolution // scale, resolution // scale)
    noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) for seed in seeds]
    pipeline.scheduler.set_timesteps(1)  # init_noise_sigma does not depend on the step count
    return torch.stack(noise).to(pipeline.device, pipeline.unet.dtype) * pipeline.scheduler.init_noise_sigma


def encode_prompts(pipeline: StableDiffusionPipeline, prompts: Sequence[str]) -> torch.Tensor:
    with torch.inference_mode():
        positive, negative = pipeline.encode_prompt(
            list(prompts), pipeline.device, num_images_per_prompt=1, do_classifier_free_guidance=True
        )
    return torch.cat([negative, positive])


def advance(
    pipeline: StableDiffusionPipeline,
    phase: Phase,
    until: int,
    guidance_scale: float = GUIDANCE_SCALE,
) -> Phase:
    """Run steps [phase.done, until) on the whole batch with the pipeline as it is now (base model, or
    with an adapter applied); returns the phase at step `until`."""
    if not phase.done <= until <= phase.steps:
        raise ValueError(f"cannot advance from step {phase.done} to {until} of {phase.steps}")
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(phase.steps, device=pipeline.device)
    latents = phase.latents
    with torch.inference_mode():
        for timestep in scheduler.timesteps[phase.done : until]:
            doubled = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
            predicted = pipeline.unet(doubled, timestep, encoder_hidden_states=phase.text_states).sample
            unconditional, conditional = predicted.chunk(2)
            guided = unconditional + guidance_scale * (conditional - unconditional)
            latents = scheduler.step(guided, timestep, latents).prev_sample
    return Phase(latents, phase.text_states, phase.steps, until)


def split(phase: Phase) -> list[Phase]:
    """One phase per request (to hand each latent to its own device)."""
    n = len(phase.latents)
    return [
        Phase(phase.latents[i : i + 1], phase.text_states[[i, n + i]], phase.steps, phase.done)
        for i in range(n)
    ]


def decode(pipeline: StableDiffusionPipeline, phase: Phase) -> np.ndarray:
    """The finished latents as (n, H, W, 3) uint8 images."""
    if phase.done != phase.steps:
        raise ValueError(f"decoding after step {phase.done} of {phase.steps}")
    with torch.inference_mode():
        images = pipeline.vae.decode(phase.latents / pipeline.vae.config.scaling_factor).sample
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()
