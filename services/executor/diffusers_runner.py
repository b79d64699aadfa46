"""The real runner: Stable Diffusion with diffusers on this server's device, one attempt at a time.

`start` is called on the bus thread; the attempt runs on the runner's own worker thread (the model
load, the denoising loop, VAE decoding and storing the PNG), and its outcome goes back to the bus
thread through `call_threadsafe`, where `done` is called exactly once. Models come from a
`ModelRegistry`, which keeps them warm between attempts. A gang's attempt (k > 1) runs the same way on
each member, through `gang_runner.run_gang_member` (patch parallelism over a gang formed per attempt).

The image is stored at `<result_store>/<task_id>/<attempt>.png` (written under a temporary name and
renamed, so the evaluator never reads half a file) and referenced by a file:// URI with its SHA-256.

Times are measured on the wall clock and reported in simulated seconds (wall x time_scale), the
cluster's clock; a real deployment runs at time_scale 1, where the two are the same.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from PIL import Image

from policy_models.profiles import get_profile
from services.executor.core import (
    AttemptFailed,
    Dispatch,
    Failure,
    FailureCode,
    ImageInfo,
    RunReport,
    Timings,
)
from services.executor.gang_runner import GangConfig, backend_for, require_rendezvous, run_gang_member
from services.executor.models import GIB, LoadedModel, ModelLoadError, ModelOutOfMemory, ModelRegistry
from services.executor.settings import ExecutorSettings

log = structlog.get_logger("executor.diffusers")

DoneCallback = Callable[[RunReport | Failure], None]
CallThreadsafe = Callable[[Callable[[], None]], object]
GUIDANCE_SCALE = 7.5  # Stable Diffusion's default classifier-free guidance
IMAGE_FORMAT = "png"


class _Abandoned(Exception):
    """Raised inside the denoising loop when the runner is closing: the attempt is dropped unreported
    (the aggregator retries it elsewhere once this executor's heartbeats stop)."""


@dataclass(frozen=True)
class Fallbacks:
    """Wall-second guesses of an attempt's phases before a model has been measured on this server."""

    step_s: float
    load_s: float


@dataclass
class _Estimate:
    step_s: float
    load_s: float


@dataclass(frozen=True)
class _Job:
    dispatch: Dispatch
    done: DoneCallback


@dataclass(frozen=True)
class Generated:
    """One image and the wall-clock marks of its generation."""

    image: Image.Image
    loop_started: float
    step_ends: tuple[float, ...]  # perf_counter at the end of each denoising step
    finished: float  # after VAE decoding and conversion to PIL


def image_path(result_store: Path, task_id: str, attempt: int) -> Path:
    """`<result_store>/<task_id>/<attempt>.png`; a task id that would leave the store is refused."""
    if task_id in ("", ".", "..") or "/" in task_id or "\\" in task_id:
        raise AttemptFailed(FailureCode.EXECUTOR_ERROR, f"task id {task_id!r} cannot name a result folder")
    return result_store / task_id / f"{attempt}.{IMAGE_FORMAT}"


def store_png(image: Image.Image, path: Path) -> ImageInfo:
    """Encode `image` as PNG and write it to `path` atomically; the ImageInfo carries its SHA-256."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return ImageInfo(
        uri=path.resolve().as_uri(),
        width=image.width,
        height=image.height,
        format=IMAGE_FORMAT,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def generate(
    loaded: LoadedModel,
    prompt: str,
    steps: int,
    seed: int,
    resolution: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generated:
    """Denoise `steps` steps from the seeded noise and decode one image of resolution x resolution."""
    pipeline = loaded.pipeline
    device = pipeline.device
    # The prompt is encoded before the loop so the loop's timing holds only denoising steps.
    prompt_embeds, negative_embeds = pipeline.encode_prompt(
        prompt, device, num_images_per_prompt=1, do_classifier_free_guidance=GUIDANCE_SCALE > 1
    )
    step_ends: list[float] = []

    def on_step_end(_pipe: Any, _step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # kernels run asynchronously: time their completion
        step_ends.append(time.perf_counter())
        if should_stop():
            raise _Abandoned
        return tensors

    # A CPU generator draws the same initial noise for a seed whatever the device, so a task's image
    # does not depend on which kind of server ran it.
    generator = torch.Generator("cpu").manual_seed(seed)
    loop_started = time.perf_counter()
    output = pipeline(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        height=resolution,
        width=resolution,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE_SCALE,
        generator=generator,
        output_type="pil",
        callback_on_step_end=on_step_end,
    )
    return Generated(output.images[0], loop_started, tuple(step_ends), time.perf_counter())


class DiffusersRunner:
    """Runs attempts with diffusers on a worker thread of its own: alone (k = 1) or as one member of a
    patch-parallel gang (k > 1, `gang` configures how)."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        result_store: Path,
        resolution: int,
        time_scale: float,
        fallbacks: Fallbacks,
        call_threadsafe: CallThreadsafe,
        gang: GangConfig | None = None,
    ) -> None:
        self.registry = registry
        self.gang = gang or GangConfig(
            backend=backend_for(registry.device), patch_mode="sync", warmup_steps=4, collective_timeout_s=10.0
        )
        self.result_store = Path(result_store)
        self.resolution = resolution
        self.time_scale = time_scale
        self._fallbacks = fallbacks
        self._call_threadsafe = call_threadsafe
        self._estimates: dict[str, _Estimate] = {}
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._work, name="diffusers-runner", daemon=True)
        self._worker.start()

    # ----- the Runner interface (bus thread) --------------------------------------------------------
    def start(self, dispatch: Dispatch, done: DoneCallback) -> float:
        if self._closing.is_set():
            raise AttemptFailed(FailureCode.EXECUTOR_ERROR, "the diffusers runner is closing")
        if dispatch.gang_size > 1:
            require_rendezvous(dispatch)  # refuse now a gang that could never meet
        cold = dispatch.model not in self.registry.resident()
        if cold:
            self._check_model_dir(dispatch.model)
        image_path(self.result_store, dispatch.task_id, dispatch.attempt)  # refuse a bad task id now
        self._jobs.put(_Job(dispatch, done))
        return self._expected_wall_s(dispatch, cold) * self.time_scale

    def resident_models(self) -> tuple[str, ...]:
        return self.registry.resident()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker; an attempt in its denoising loop is abandoned at the next step."""
        self._closing.set()
        self._jobs.put(None)
        self._worker.join(timeout=timeout_s)

    def _check_model_dir(self, model: str) -> None:
        try:
            model_dir = self.registry.model_dir(model)
        except ModelLoadError as err:
            raise AttemptFailed(FailureCode.MODEL_LOAD_FAILED, str(err)) from err
        if not (model_dir / "model_index.json").is_file():
            raise AttemptFailed(FailureCode.MODEL_LOAD_FAILED, f"model {model!r}: no pipeline at {model_dir}")

    def _expected_wall_s(self, dispatch: Dispatch, cold: bool) -> float:
        estimate = self._estimates.get(dispatch.model)
        step_s = estimate.step_s if estimate else self._fallbacks.step_s
        load_s = estimate.load_s if estimate else self._fallbacks.load_s
        return (load_s if cold else 0.0) + step_s * dispatch.steps

    # ----- the worker thread ------------------------------------------------------------------------
    def _work(self) -> None:
        torch.set_num_threads(1)  # the executor's CPU is shared with the bus thread and other services
        while (job := self._jobs.get()) is not None:
            try:
                outcome = self._attempt(job.dispatch)
            except _Abandoned:
                log.info("attempt abandoned: the runner is closing", task_id=job.dispatch.task_id)
                return
            self._hand_back(job.done, outcome)

    def _hand_back(self, done: DoneCallback, outcome: RunReport | Failure) -> None:
        self._call_threadsafe(lambda: done(outcome))

    def _attempt(self, dispatch: Dispatch) -> RunReport | Failure:
        """Run one attempt, turning every error into the Failure the aggregator should see."""
        try:
            return self._run(dispatch)
        except AttemptFailed as err:
            return err.failure
        except ModelOutOfMemory as err:
            return Failure(FailureCode.OUT_OF_MEMORY, str(err))
        except ModelLoadError as err:
            return Failure(FailureCode.MODEL_LOAD_FAILED, str(err))
        except torch.OutOfMemoryError as err:
            self.registry.release_memory()
            return Failure(FailureCode.OUT_OF_MEMORY, f"out of memory generating {dispatch.task_id}: {err}")
        except _Abandoned:
            raise
        except Exception as err:  # any other error fails this attempt, never the executor
            log.exception("attempt failed", task_id=dispatch.task_id)
            return Failure(FailureCode.EXECUTOR_ERROR, f"diffusers runner: {err!r}")

    def _run(self, dispatch: Dispatch) -> RunReport:
        started = time.perf_counter()
        loaded = self.registry.get(dispatch.model)
        if dispatch.gang_size > 1:
            return self._run_gang(dispatch, loaded, started)
        generated = generate(
            loaded, dispatch.prompt, dispatch.steps, dispatch.seed, self.resolution, self._closing.is_set
        )
        image = store_png(generated.image, image_path(self.result_store, dispatch.task_id, dispatch.attempt))
        finished = time.perf_counter()
        timings = self._timings(loaded, generated, dispatch.steps, started, finished)
        step_wall_s = (generated.step_ends[-1] - generated.loop_started) / dispatch.steps
        self._remember(dispatch.model, loaded, step_wall_s)
        return RunReport(timings=timings, model_reused=not loaded.cold, simulated=False, image=image)

    def _run_gang(self, dispatch: Dispatch, loaded: LoadedModel, started: float) -> RunReport:
        """This member's share of a gang's attempt; only rank 0 stores an image (and its report is the
        one published)."""

        def store(image: Image.Image) -> ImageInfo:
            return store_png(image, image_path(self.result_store, dispatch.task_id, dispatch.attempt))

        run = run_gang_member(dispatch, loaded, self.gang, self.resolution, store)
        denoise_wall_s = run.loop_finished - run.loop_started
        scale = self.time_scale
        timings = Timings(
            init_s=loaded.load_s * scale,
            group_setup_s=run.group_setup_s * scale,
            step_mean_s=denoise_wall_s / dispatch.steps * scale,
            denoise_s=denoise_wall_s * scale,
            decode_s=(run.finished - run.loop_finished) * scale,
            total_s=(run.finished - started) * scale,
        )
        return RunReport(timings=timings, model_reused=not loaded.cold, simulated=False, image=run.image)

    def _timings(
        self, loaded: LoadedModel, generated: Generated, steps: int, started: float, finished: float
    ) -> Timings:
        denoise_wall_s = generated.step_ends[-1] - generated.loop_started
        scale = self.time_scale
        return Timings(
            init_s=loaded.load_s * scale,
            step_mean_s=denoise_wall_s / steps * scale,
            denoise_s=denoise_wall_s * scale,
            decode_s=(finished - generated.step_ends[-1]) * scale,
            total_s=(finished - started) * scale,
        )

    def _remember(self, model: str, loaded: LoadedModel, step_wall_s: float) -> None:
        """Keep this model's measured speeds (wall seconds) for the next attempts' expected durations.
        Written here, read on the bus thread: replacing a dict entry is atomic."""
        previous = self._estimates.get(model)
        load_s = loaded.load_s if loaded.cold else (previous.load_s if previous else self._fallbacks.load_s)
        self._estimates[model] = _Estimate(step_s=step_wall_s, load_s=load_s)


def build_diffusers_runner(settings: ExecutorSettings, call_threadsafe: CallThreadsafe) -> DiffusersRunner:
    """The runner and its registry as the settings describe them."""
    registry = ModelRegistry(
        settings.models_dir,
        device=settings.device,
        dtype=settings.dtype,
        memory_budget_bytes=int(settings.memory_budget_gb * GIB),
        max_models=settings.max_resident_models,
    )
    profile = get_profile(settings.profile)
    # Until a model is measured here, expect the profile's single-server times on a server this fast.
    fallbacks = Fallbacks(step_s=profile.step_s[1] / settings.speed_factor, load_s=profile.init_s[1])
    return DiffusersRunner(
        registry,
        result_store=settings.result_store,
        resolution=settings.resolution,
        time_scale=settings.time_scale,
        fallbacks=fallbacks,
        call_threadsafe=call_threadsafe,
        gang=GangConfig(
            backend=backend_for(settings.device),
            patch_mode=settings.patch_mode,
            warmup_steps=settings.warmup_steps,
            collective_timeout_s=settings.collective_timeout_s,
        ),
    )
