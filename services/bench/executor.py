"""Patch-parallel gangs on this machine (`eat bench executor`): speed, regrouping cost and exactness.

Four member processes (forked from one forkserver that imported torch and diffusers once) each keep a
model warm in a `ModelRegistry`, as executors do, and form real gangs (gloo on CPU; NCCL on CUDA when
there is a GPU per member, else gloo over the GPUs' tensors). Measured:

- `step_s`: wall seconds per denoising step for gangs of 1, 2 and 4 (sync mode, after a warm-up run);
- `cold_load_s`: loading the model from disk through the registry (member 0, alone);
- `regroup_s`: forming a new gang with the model warm (form_gang + apply_patch_parallel + remove +
  close), the median over formations of 2 and 4; `regroup_vs_load_ratio` (target: at most 1/20);
- `sync_max_abs_diff`: max |sync patch-parallel latents - single-process latents| over gangs of 2 and 4;
- `displaced_psnr_db`: PSNR of the displaced-mode decoded image against the sync one (worst gang).

The default model is the tiny test pipeline (built into the work directory); `model_dir` uses a real
SD 1.5 directory, and `unet_config="sd15"` swaps in SD 1.5's UNet architecture (and a CLIP ViT-L/14
sized text encoder, whose 768-wide output that UNet attends to) with seeded random weights, for GPU runs.
Speed figures are reported, never asserted.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from services.bench.sim import machine_info

HOST = "127.0.0.1"
MODEL_NAME = "bench"
GANG_SIZES = (1, 2, 4)
MEMBERS = max(GANG_SIZES)
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
ANSWER_WITHIN_S = 1800.0
REGROUP_TARGET_RATIO = 1 / 20  # issue 5: re-forming a gang should cost at most 1/20 of a cold load
SD15_UNET_CONFIG: dict[str, Any] = {  # runwayml/stable-diffusion-v1-5 unet/config.json
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_TEXT_CONFIG: dict[str, Any] = {  # CLIP ViT-L/14's text tower, SD 1.5's text encoder
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
}
_formations = itertools.count()


@dataclass(frozen=True)
class ExecutorBenchSettings:
    work_dir: Path = Path("out/bench-executor")
    model_dir: Path | None = None  # None: the tiny pipeline, built into work_dir
    unet_config: str = "model"  # "model" (the directory's own UNet) | "sd15" (random SD 1.5 UNet)
    resolution: int = 0  # 0: the tiny model's 64 px, or 512 for SD 1.5
    device: str = "cpu"
    dtype: str = "float32"
    steps: int = 10
    warmup_steps: int = 4  # displaced mode's fresh steps
    regroup_repeats: int = 3  # formations per gang size for regroup_s
    model_seed: int = 0  # random weights of the tiny model / the sd15 UNet
    noise_seed: int = 1234
    timeout_s: float = 60.0


# ----- preparing the model ------------------------------------------------------------------------------
def prepare_model(settings: ExecutorBenchSettings) -> tuple[Path, str]:
    """A models directory holding the benchmarked pipeline as `MODEL_NAME`, and a name for the report."""
    from services.executor.tiny import make_tiny

    models_dir = settings.work_dir / "models"
    target = models_dir / MODEL_NAME
    if target.exists():
        shutil.rmtree(target)
    if settings.model_dir is None:
        make_tiny(target, seed=settings.model_seed)
        source = "tiny"
    else:
        shutil.copytree(settings.model_dir, target)
        source = str(settings.model_dir)
    if settings.unet_config == "sd15":
        swap_in_sd15_unet(target, settings.model_seed)
        source += "+sd15-unet(random)"
    return models_dir, source


def swap_in_sd15_unet(model_dir: Path, seed: int) -> None:
    """Replace the saved UNet (and text encoder, for its width) by SD 1.5-sized ones, seeded random."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        pipe.unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        pipe.text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    finally:
        torch.random.set_rng_state(state)
    pipe.save_pretrained(str(model_dir), safe_serialization=True)


def default_resolution(settings: ExecutorBenchSettings) -> int:
    if settings.resolution:
        return settings.resolution
    if settings.model_dir is None and settings.unet_config != "sd15":
        from services.executor.tiny import TINY_RESOLUTION

        return TINY_RESOLUTION
    return 512


# ----- member processes ---------------------------------------------------------------------------------
def member_main(models_dir: Path, device: str, dtype: str, inbox: Queue, outbox: Queue) -> None:
    """One executor's registry, kept warm; runs jobs (name, kwargs) until None arrives."""
    from services.executor.models import ModelRegistry

    torch.set_num_threads(1)
    registry = ModelRegistry(models_dir, device=device, dtype=dtype, memory_budget_bytes=2**40, max_models=1)
    jobs = {"load": job_load, "denoise": job_denoise, "regroup": job_regroup}
    while (request := inbox.get()) is not None:
        name, kwargs = request
        try:
            outbox.put(("ok", jobs[name](registry, **kwargs)))
        except Exception as err:  # reported to the coordinator, which stops the bench
            outbox.put(("error", f"{name}: {type(err).__name__}: {err}"))


def job_load(registry: Any) -> float:
    loaded = registry.get(MODEL_NAME)
    return float(loaded.load_s)


def job_regroup(registry: Any, rank: int, world: int, port: int, group_name: str, backend: str) -> float:
    """Seconds to form a gang and wrap, then unwrap, the warm UNet and leave."""
    from services.executor.parallel import apply_patch_parallel, form_gang

    unet = registry.get(MODEL_NAME).pipeline.unet
    started = time.perf_counter()
    gang = form_gang(HOST, port, group_name, rank, world, 60.0, backend=backend)
    handle = apply_patch_parallel(unet, gang.comm, "sync")
    handle.remove()
    gang.close()
    return time.perf_counter() - started


def job_denoise(
    registry: Any,
    rank: int,
    world: int,
    port: int,
    group_name: str,
    backend: str,
    mode: str,
    warmup_steps: int,
    resolution: int,
    steps: int,
    seed: int,
    timeout_s: float,
) -> dict[str, Any]:
    """One patch-parallel run: seconds per step; rank 0 also returns the latents and decoded pixels."""
    from services.executor.parallel import (
        DenoiseRequest,
        apply_patch_parallel,
        decode_images,
        denoise_patch_parallel,
        encode_prompt,
        form_gang,
    )

    pipe = registry.get(MODEL_NAME).pipeline
    gang = form_gang(HOST, port, group_name, rank, world, timeout_s, backend=backend)
    handle = apply_patch_parallel(pipe.unet, gang.comm, mode, warmup_steps)
    try:
        embeddings = encode_prompt(pipe, PROMPT)
        request = DenoiseRequest(height=resolution, width=resolution, steps=steps, seed=seed)
        synchronize(pipe.device)
        started = time.perf_counter()
        latents = denoise_patch_parallel(pipe, handle, embeddings, request)
        synchronize(pipe.device)
        step_s = (time.perf_counter() - started) / steps
        if rank != 0:
            return {"step_s": step_s}
        pixels = decode_images(pipe, latents, output_type="np")[0]
        return {
            "step_s": step_s,
            "latents": latents.float().cpu().numpy(),
            "pixels": np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8),
        }
    finally:
        handle.remove()
        gang.close()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Members:
    """The member processes and the coordinator's side of their queues."""

    def __init__(self, models_dir: Path, settings: ExecutorBenchSettings) -> None:
        context = mp.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self.inboxes = [context.Queue() for _ in range(MEMBERS)]
        self.outboxes = [context.Queue() for _ in range(MEMBERS)]
        self.processes = [
            context.Process(
                target=member_main,
                args=(models_dir, member_device(settings.device, index), settings.dtype, inbox, outbox),
                daemon=True,
            )
            for index, (inbox, outbox) in enumerate(zip(self.inboxes, self.outboxes, strict=True))
        ]
        for process in self.processes:
            process.start()

    def ask(self, members: list[int], job: str, per_member: list[dict[str, Any]]) -> list[Any]:
        for index, kwargs in zip(members, per_member, strict=True):
            self.inboxes[index].put((job, kwargs))
        answers = [self.outboxes[index].get(timeout=ANSWER_WITHIN_S) for index in members]
        errors = [detail for status, detail in answers if status != "ok"]
        if errors:
            raise RuntimeError(f"bench job {job!r} failed: {errors}")
        return [detail for _, detail in answers]

    def gang(self, world: int, job: str, **kwargs: Any) -> list[Any]:
        """Run `job` on members 0..world-1 as one fresh formation."""
        port, group = free_port(), f"bench-{next(_formations)}-{time.monotonic_ns()}"
        per_member = [dict(kwargs, rank=r, world=world, port=port, group_name=group) for r in range(world)]
        return self.ask(list(range(world)), job, per_member)

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()


def member_device(device: str, index: int) -> str:
    """Spread the members over the GPUs there are (all on one when there is one)."""
    if not device.startswith("cuda") or ":" in device:
        return device
    return f"cuda:{index % max(torch.cuda.device_count(), 1)}"


def gang_backend(device: str) -> str:
    """NCCL needs a GPU per member; otherwise gloo (which also moves CUDA tensors)."""
    if device.startswith("cuda") and ":" not in device and torch.cuda.device_count() >= MEMBERS:
        return "nccl"
    return "gloo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# ----- the measurements ---------------------------------------------------------------------------------
@dataclass
class Runs:
    """Rank 0's outputs by (mode, gang size)."""

    results: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


def run_executor_bench(settings: ExecutorBenchSettings) -> dict[str, Any]:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    models_dir, model = prepare_model(settings)
    resolution = default_resolution(settings)
    backend = gang_backend(settings.device)
    members = Members(models_dir, settings)
    try:
        cold_load_s = measure_loads(members)
        denoise = {
            "backend": backend,
            "warmup_steps": settings.warmup_steps,
            "resolution": resolution,
            "steps": settings.steps,
            "seed": settings.noise_seed,
            "timeout_s": settings.timeout_s,
        }
        runs = measure_runs(members, denoise)
        regroup_s = measure_regroup(members, backend, settings.regroup_repeats)
    finally:
        members.close()
    return build_report(settings, model, resolution, backend, cold_load_s, regroup_s, runs)


def measure_loads(members: Members) -> float:
    """Member 0 loads alone (the cold load measured); the others then load theirs."""
    (cold_load_s,) = members.ask([0], "load", [{}])
    members.ask(list(range(1, MEMBERS)), "load", [{} for _ in range(1, MEMBERS)])
    return float(cold_load_s)


def measure_runs(members: Members, denoise: dict[str, Any]) -> Runs:
    runs = Runs()
    members.gang(MEMBERS, "denoise", mode="sync", **dict(denoise, steps=2))  # warm-up: allocations, caches
    for world in GANG_SIZES:
        runs.results[("sync", world)] = merge_ranks(members.gang(world, "denoise", mode="sync", **denoise))
    for world in GANG_SIZES[1:]:
        displaced = members.gang(world, "denoise", mode="displaced", **denoise)
        runs.results[("displaced", world)] = merge_ranks(displaced)
    return runs


def merge_ranks(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank 0's outputs, with the step time of the slowest member (the gang's pace)."""
    return dict(answers[0], step_s=max(answer["step_s"] for answer in answers))


def measure_regroup(members: Members, backend: str, repeats: int) -> float:
    times = [
        max(members.gang(world, "regroup", backend=backend))
        for world in GANG_SIZES[1:]
        for _ in range(repeats)
    ]
    return statistics.median(times)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def build_report(
    settings: ExecutorBenchSettings,
    model: str,
    resolution: int,
    backend: str,
    cold_load_s: float,
    regroup_s: float,
    runs: Runs,
) -> dict[str, Any]:
    single = runs.results[("sync", 1)]
    sync_diff = {
        str(w): float(np.abs(runs.results[("sync", w)]["latents"] - single["latents"]).max())
        for w in GANG_SIZES[1:]
    }
    psnr = {
        str(w): psnr_db(runs.results[("displaced", w)]["pixels"], runs.results[("sync", w)]["pixels"])
        for w in GANG_SIZES[1:]
    }
    ratio = regroup_s / cold_load_s if cold_load_s > 0 else float("inf")
    config = asdict(settings)
    return {
        "device": settings.device,
        "backend": backend,
        "model": model,
        "dtype": settings.dtype,
        "resolution": resolution,
        "steps": settings.steps,
        "step_s": {str(w): runs.results[("sync", w)]["step_s"] for w in GANG_SIZES},
        "cold_load_s": cold_load_s,
        "regroup_s": regroup_s,
        "regroup_vs_load_ratio": ratio,
        "regroup_target_ratio": REGROUP_TARGET_RATIO,
        "regroup_target_met": ratio <= REGROUP_TARGET_RATIO,
        "sync_max_abs_diff": max(sync_diff.values()),
        "sync_max_abs_diff_by_gang": sync_diff,
        "displaced_psnr_db": min(psnr.values()),
        "displaced_psnr_db_by_gang": psnr,
        "displaced_warmup_steps": settings.warmup_steps,
        "seeds": {"model": settings.model_seed, "noise": settings.noise_seed},
        "machine": dict(machine_info(), torch=torch.__version__, cuda=torch.cuda.is_available()),
        "settings": {key: str(value) for key, value in config.items()},
    }


def format_report(report: dict[str, Any]) -> str:
    steps = ", ".join(f"k={k}: {s * 1000:.1f} ms" for k, s in report["step_s"].items())
    return "\n".join(
        [
            f"executor bench: {report['model']} at {report['resolution']} px on {report['device']} "
            f"({report['backend']}), {report['steps']} steps",
            f"  seconds per step: {steps}",
            f"  cold load {report['cold_load_s']:.3f}s, regroup {report['regroup_s']:.4f}s "
            f"(ratio {report['regroup_vs_load_ratio']:.4f}, target <= {REGROUP_TARGET_RATIO:.3f})",
            f"  sync vs single max |diff| {report['sync_max_abs_diff']:.2e}, "
            f"displaced PSNR {report['displaced_psnr_db']:.1f} dB",
        ]
    )
