"""One gang member's share of a patch-parallel attempt (k > 1), run on the diffusers runner's worker thread.

Every member of a gang runs `run_gang_member` with its own copy of the dispatch: it takes the warm
pipeline from the registry (loading it if cold; a new gang never reloads a model), meets the others at
the dispatch's rendezvous (rank 0 serves the TCP store on rendezvous.port), wraps the UNet for this
formation, denoises its row band, and - rank 0 only - decodes the gathered latent with the VAE and
stores the PNG where the single-server path stores it. The UNet is always unwrapped (`handle.remove()`)
and the group torn down (`gang.close()`), whatever happened, so the next attempt finds the plain model.

Gang errors become the failures the aggregator understands: a formation that does not complete is
RENDEZVOUS_FAILED, a member lost mid-run is GANG_MEMBER_LOST (every surviving member reports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import torch
from PIL import Image

from services.executor.core import AttemptFailed, Dispatch, FailureCode, ImageInfo, Rendezvous
from services.executor.models import LoadedModel
from services.executor.parallel import (
    DenoiseRequest,
    Gang,
    GangFormationError,
    GangMemberLost,
    apply_patch_parallel,
    decode_images,
    denoise_patch_parallel,
    encode_prompt,
    form_gang,
)

log = structlog.get_logger("executor.gang")

GUIDANCE_SCALE = 7.5  # the same guidance as the single-server path, so a gang's image equals it


@dataclass(frozen=True)
class GangConfig:
    """How this executor takes part in gangs (from its settings)."""

    backend: str  # "gloo" on CPU, "nccl" on CUDA
    patch_mode: str  # "sync" | "displaced"
    warmup_steps: int
    collective_timeout_s: float  # wall seconds before a silent member counts as lost


@dataclass(frozen=True)
class GangRun:
    """Wall-clock marks of one member's share of an attempt; `image` only on rank 0."""

    group_setup_s: float
    loop_started: float
    loop_finished: float
    finished: float
    image: ImageInfo | None


def backend_for(device: str) -> str:
    """gloo for CPU gangs, nccl when the model runs on a GPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def run_gang_member(
    dispatch: Dispatch,
    loaded: LoadedModel,
    config: GangConfig,
    resolution: int,
    store_image: Callable[[Image.Image], ImageInfo],
) -> GangRun:
    """Form the gang, run this member's band and (rank 0) decode and store; errors as AttemptFailed."""
    rendezvous = require_rendezvous(dispatch)
    formation_started = time.perf_counter()
    gang = meet(dispatch, rendezvous, config)
    group_setup_s = time.perf_counter() - formation_started
    pipe = loaded.pipeline
    handle = None
    try:
        handle = apply_patch_parallel(pipe.unet, gang.comm, config.patch_mode, config.warmup_steps)
        embeddings = encode_prompt(pipe, dispatch.prompt)
        request = DenoiseRequest(
            height=resolution,
            width=resolution,
            steps=dispatch.steps,
            seed=dispatch.seed,
            guidance_scale=GUIDANCE_SCALE,
        )
        loop_started = time.perf_counter()
        latents = denoise_patch_parallel(pipe, handle, embeddings, request)
        synchronize(pipe.device)
        loop_finished = time.perf_counter()
        image = store_image(decode_images(pipe, latents)[0]) if dispatch.rank == 0 else None
        return GangRun(group_setup_s, loop_started, loop_finished, time.perf_counter(), image)
    except GangMemberLost as err:
        log.warning("gang member lost", group=gang.name, rank=gang.rank, error=str(err))
        raise AttemptFailed(FailureCode.GANG_MEMBER_LOST, str(err)) from err
    finally:
        if handle is not None:
            handle.remove()
        gang.close()


def require_rendezvous(dispatch: Dispatch) -> Rendezvous:
    """The dispatch's rendezvous; a gang dispatched without one cannot meet (RENDEZVOUS_FAILED)."""
    rendezvous = dispatch.rendezvous
    if rendezvous is None or not rendezvous.group_name or not rendezvous.port:
        size = dispatch.gang_size
        raise AttemptFailed(FailureCode.RENDEZVOUS_FAILED, f"a gang of {size} needs a rendezvous to meet at")
    return dispatch.rendezvous


def meet(dispatch: Dispatch, rendezvous: Rendezvous, config: GangConfig) -> Gang:
    """Form this formation's group. Joining may wait for members still loading the model, so it gets
    the rendezvous timeout; once formed, collectives get the (shorter) collective timeout."""
    join_timeout_s = rendezvous.timeout_s if rendezvous.timeout_s > 0 else config.collective_timeout_s
    try:
        gang = form_gang(
            rendezvous.host,
            rendezvous.port,
            rendezvous.group_name,
            dispatch.rank,
            dispatch.gang_size,
            join_timeout_s,
            backend=config.backend,
        )
    except GangFormationError as err:
        raise AttemptFailed(FailureCode.RENDEZVOUS_FAILED, str(err)) from err
    # PatchComm reads the gang's timeout when built (gang.comm): the collectives' bound is ours.
    gang.timeout_s = config.collective_timeout_s
    return gang


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: time their completion
