"""Patch parallelism in one process: world size 1 is the plain model, and wrapping is reversible."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from services.executor.parallel import DenoiseRequest, PatchComm, apply_patch_parallel, denoise_patch_parallel
from services.executor.parallel.denoise import fresh_scheduler
from services.executor.parallel.layers import GatheredProjection, PatchConv2d, PatchGroupNorm
from tests.services.executor.parallel.tiny_sd import (
    UNET_CONFIG,
    build_pipeline,
    pipeline_latents,
    prompt_embeddings,
)


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    torch.set_num_threads(1)
    return build_pipeline()


def probe_forward(unet: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    sample = torch.randn(2, 4, 18, 16, generator=generator)
    context = torch.randn(2, 8, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor(321), encoder_hidden_states=context, return_dict=False)[0]


@pytest.mark.parametrize("mode", ["sync", "displaced"])
def test_world_one_wrappers_run_the_plain_forward_bit_for_bit(
    pipe: StableDiffusionPipeline, mode: str
) -> None:
    plain = probe_forward(pipe.unet)
    handle = apply_patch_parallel(pipe.unet, PatchComm.single(), mode, warmup_steps=0)  # type: ignore[arg-type]
    try:
        kinds = {type(module) for module in pipe.unet.modules()}
        assert {PatchConv2d, PatchGroupNorm, GatheredProjection} <= kinds
        handle.begin(18)
        assert torch.equal(probe_forward(pipe.unet), plain)
        assert torch.equal(probe_forward(pipe.unet), plain)  # a later, "stale" step too
    finally:
        handle.remove()


def test_wrapping_swaps_the_spatial_layers_and_remove_restores_the_same_objects(
    pipe: StableDiffusionPipeline,
) -> None:
    unet = pipe.unet
    before = [(name, id(module)) for name, module in unet.named_modules()]
    plain_3x3 = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    self_attention_count = sum(name.endswith("attn1") for name, _ in unet.named_modules())
    plain = probe_forward(unet)
    handle = apply_patch_parallel(unet, PatchComm.single())
    try:
        convs = [m for m in unet.modules() if isinstance(m, PatchConv2d)]
        # Every 3x3 convolution (resnets, conv_in/out, down/upsamplers) and no 1x1 one.
        assert sorted(id(wrapper.inner) for wrapper in convs) == sorted(id(conv) for conv in plain_3x3)
        projections = [m for m in unet.modules() if isinstance(m, GatheredProjection)]
        assert len(projections) == 2 * self_attention_count == 8  # to_k and to_v of each attn1
        with pytest.raises(RuntimeError, match="already patch-parallel"):
            apply_patch_parallel(unet, PatchComm.single())
    finally:
        handle.remove()
    assert [(name, id(module)) for name, module in unet.named_modules()] == before
    assert torch.equal(probe_forward(unet), plain)
    handle.remove()  # idempotent


def test_world_one_loop_reproduces_the_pipeline_latents_exactly(pipe: StableDiffusionPipeline) -> None:
    embeddings = prompt_embeddings(pipe)
    expected = pipeline_latents(pipe, embeddings, height=144, width=128, steps=4, seed=3)
    handle = apply_patch_parallel(pipe.unet, PatchComm.single())
    try:
        latents = denoise_patch_parallel(pipe, handle, embeddings, DenoiseRequest(144, 128, steps=4, seed=3))
    finally:
        handle.remove()
    assert handle.step == 4  # one UNet call per step
    assert torch.equal(latents, expected)


def test_unets_and_schedulers_that_bands_cannot_reproduce_are_refused() -> None:
    unet = UNet2DConditionModel(**(UNET_CONFIG | {"downsample_padding": 0}))
    with pytest.raises(ValueError, match="padding 0"):
        apply_patch_parallel(unet, PatchComm.single())
    ancestral = DDPMScheduler()
    assert isinstance(fresh_scheduler(ancestral, 1), DDPMScheduler)  # alone: fine
    with pytest.raises(ValueError, match="draws noise"):
        fresh_scheduler(ancestral, 2)


def test_a_removed_handle_cannot_start_a_run(pipe: StableDiffusionPipeline) -> None:
    handle = apply_patch_parallel(pipe.unet, PatchComm.single())
    handle.remove()
    with pytest.raises(RuntimeError, match="removed"):
        handle.begin(16)


def test_the_step_counter_follows_unet_calls_or_the_caller(pipe: StableDiffusionPipeline) -> None:
    counted = apply_patch_parallel(pipe.unet, PatchComm.single(), "displaced")
    try:
        counted.begin(18)
        probe_forward(pipe.unet)
        probe_forward(pipe.unet)
        assert counted.step == 2
    finally:
        counted.remove()
    manual = apply_patch_parallel(pipe.unet, PatchComm.single(), "displaced", auto_step=False)
    try:
        manual.begin(18)
        probe_forward(pipe.unet)
        assert manual.step == 0
        manual.set_step(3)
        assert manual.step == 3
    finally:
        manual.remove()
