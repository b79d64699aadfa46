"""Jobs that the pool's worker processes run as gang members (imported by name in each worker).

Each worker builds the tiny pipeline once and keeps it: every gang it joins reuses the same UNet object,
as an executor keeps its model warm. Before any gang it records the UNet's module tree and one plain
forward, so after each `handle.remove()` it can prove the model is exactly what it was.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from services.executor.parallel import (
    DenoiseRequest,
    GangMemberLost,
    decode_images,
    denoise_patch_parallel,
    form_gang,
)
from services.executor.parallel.patch import apply_patch_parallel
from tests.services.executor.parallel.tiny_sd import build_pipeline, prompt_embeddings

HOST = "127.0.0.1"
JOIN_TIMEOUT_S = 30.0
KILLED_EXIT_CODE = 17


@dataclass
class WarmModel:
    pipe: StableDiffusionPipeline
    module_tree: list[tuple[str, int]]  # (name, id) of every module of the plain UNet
    probe_input: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    probe_output: torch.Tensor


_model: WarmModel | None = None
_other_layouts: dict[str, StableDiffusionPipeline] = {}  # built on first use, kept warm too


def init_worker() -> None:
    """One torch thread (the machine is shared) and the model loaded once."""
    global _model
    torch.set_num_threads(1)
    pipe = build_pipeline()
    generator = torch.Generator().manual_seed(11)
    probe = (
        torch.randn(2, 4, 16, 16, generator=generator),
        torch.tensor(500),
        torch.randn(2, 8, 32, generator=generator),
    )
    _model = WarmModel(pipe, module_tree(pipe.unet), probe, plain_forward(pipe.unet, probe))


def module_tree(unet: torch.nn.Module) -> list[tuple[str, int]]:
    return [(name, id(module)) for name, module in unet.named_modules()]


@torch.no_grad()
def plain_forward(unet: torch.nn.Module, probe: tuple[torch.Tensor, ...]) -> torch.Tensor:
    sample, timestep, context = probe
    return unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


def restored_exactly() -> bool:
    """The UNet has its original module objects and its forward is bit-identical to before any gang."""
    assert _model is not None
    unet = _model.pipe.unet
    same_tree = module_tree(unet) == _model.module_tree
    return same_tree and torch.equal(plain_forward(unet, _model.probe_input), _model.probe_output)


def denoise(
    rank: int,
    world: int,
    port: int,
    group_name: str,
    *,
    mode: str = "sync",
    warmup_steps: int = 4,
    height: int = 144,
    width: int = 128,
    steps: int = 4,
    seed: int = 3,
    timeout_s: float = 10.0,
    die_rank: int | None = None,
    stall_rank: int | None = None,
    stall_s: float = 0.0,
    fault_after_steps: int = 0,
    unet_layout: str = "tiny",
) -> dict[str, Any]:
    """Join a gang, run a full patch-parallel denoising run, leave; report latents and restoration.

    After `fault_after_steps` UNet calls, member `die_rank` exits abruptly and member `stall_rank`
    stops answering for `stall_s` seconds; the members that get a GangMemberLost report it and how
    long after their last good step it came."""
    pipe = warm_pipeline(unet_layout)
    request = DenoiseRequest(height=height, width=width, steps=steps, seed=seed)
    last_step_end = [time.monotonic()]

    def after_step(module: torch.nn.Module, args: Any, output: Any) -> None:
        last_step_end[0] = time.monotonic()
        if handle.step >= fault_after_steps and rank == die_rank:
            os._exit(KILLED_EXIT_CODE)
        if handle.step == fault_after_steps and rank == stall_rank:
            time.sleep(stall_s)

    # Joining may take long on a loaded machine; once formed, collectives get the short timeout (as the
    # gang runner does: rendezvous timeout to join, collective timeout after).
    gang = form_gang(HOST, port, group_name, rank, world, max(timeout_s, JOIN_TIMEOUT_S))
    gang.timeout_s = timeout_s
    handle = apply_patch_parallel(pipe.unet, gang.comm, mode, warmup_steps)  # type: ignore[arg-type]
    hook = pipe.unet.register_forward_hook(after_step)
    try:
        latents = denoise_patch_parallel(pipe, handle, prompt_embeddings(pipe), request)
    except GangMemberLost as err:
        return {"lost": str(err), "stalled_s": time.monotonic() - last_step_end[0]}
    finally:
        hook.remove()
        handle.remove()
        gang.close()
    result: dict[str, Any] = {"latents": latents.numpy(), "restored": restored_exactly()}
    if rank == 0:
        result["image"] = decode_images(pipe, latents, output_type="np")
    return result


def warm_pipeline(unet_layout: str) -> StableDiffusionPipeline:
    assert _model is not None
    if unet_layout == "tiny":
        return _model.pipe
    if unet_layout not in _other_layouts:
        _other_layouts[unet_layout] = build_pipeline(unet_layout=unet_layout)
    return _other_layouts[unet_layout]


def join(rank: int, world: int, port: int, group_name: str, *, timeout_s: float = 10.0) -> list[int]:
    """Form a gang and all-gather the ranks: proves who actually met."""
    with form_gang(HOST, port, group_name, rank, world, timeout_s) as gang:
        gathered = gang.comm.all_gather(torch.tensor([rank]))
    return [int(value) for value in gathered]
