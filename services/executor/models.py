"""The executor's model registry: Stable Diffusion pipelines kept warm under a memory budget.

A model name maps to a local directory `<models_dir>/<name>` written by `save_pretrained` (real weights
or `eat models make-tiny`). `get` loads a model on first use and keeps it resident; when the resident
models no longer fit the budget (bytes) or the count limit (what the executor reports as
max_resident_models), the least recently used ones are evicted, never the one being returned.
Nothing is downloaded: loading reads the directory only (`local_files_only`); deployments also set
HF_HUB_OFFLINE=1 for executors so no library reaches for the Hub.

The registry is used from the runner's worker thread and read from the bus thread (statuses), so its
bookkeeping sits behind a lock; loading itself happens outside the lock.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
import transformers
from diffusers import StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging

log = structlog.get_logger("executor.models")

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")
GIB = 1024**3


class ModelLoadError(Exception):
    """A model cannot be loaded: no such directory, unreadable or incompatible weights."""


class ModelOutOfMemory(ModelLoadError):
    """The device ran out of memory while loading a model, even after evicting every other one."""


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline handed out by the registry; `cold` when `get` loaded it (taking `load_s` wall seconds)."""

    name: str
    pipeline: StableDiffusionPipeline
    size_bytes: int
    cold: bool
    load_s: float


@dataclass
class _Resident:
    pipeline: StableDiffusionPipeline
    size_bytes: int


def pipeline_bytes(pipeline: StableDiffusionPipeline) -> int:
    """Memory held by the pipeline's weights: the bytes of every parameter and buffer of its modules."""
    total = 0
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            tensors = [*component.parameters(), *component.buffers()]
            total += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    return total


def weights_on_disk(model_dir: Path) -> int:
    """Bytes of the weight files under a model directory: an estimate of its size before loading."""
    files = (path for path in model_dir.rglob("*") if path.suffix in WEIGHT_SUFFIXES and path.is_file())
    return sum(path.stat().st_size for path in files)


def load_pipeline(model_dir: Path, device: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    """The pipeline saved in `model_dir`, offline, on `device`, with progress bars off."""
    # Loading progress bars would interleave with the service's structured log lines.
    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipeline = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


Loader = Callable[[Path, str, torch.dtype], StableDiffusionPipeline]


class ModelRegistry:
    """Named pipelines loaded on demand and evicted least recently used first."""

    def __init__(
        self,
        models_dir: Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        memory_budget_bytes: int,
        max_models: int,
        loader: Loader = load_pipeline,
    ) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
        if memory_budget_bytes <= 0 or max_models < 1:
            raise ValueError("the memory budget must be > 0 bytes and max_models >= 1")
        self.models_dir = Path(models_dir)
        self.device = device
        self.dtype = TORCH_DTYPES[dtype]
        self.memory_budget_bytes = memory_budget_bytes
        self.max_models = max_models
        self._loader = loader
        self._lock = threading.Lock()
        self._resident: OrderedDict[str, _Resident] = OrderedDict()  # least recently used first
        self._loads: Counter[str] = Counter()

    # ----- what is resident ------------------------------------------------------------------------
    def resident(self) -> tuple[str, ...]:
        """Resident model names, most recently used first."""
        with self._lock:
            return tuple(reversed(self._resident))

    @property
    def loads(self) -> dict[str, int]:
        """How many times each model was loaded since start (1 for a model that stayed warm)."""
        with self._lock:
            return dict(self._loads)

    @property
    def resident_bytes(self) -> int:
        with self._lock:
            return sum(entry.size_bytes for entry in self._resident.values())

    def model_dir(self, name: str) -> Path:
        """`<models_dir>/<name>`; a name that would leave models_dir is refused."""
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ModelLoadError(f"invalid model name {name!r}")
        return self.models_dir / name

    # ----- getting a model -------------------------------------------------------------------------
    def get(self, name: str) -> LoadedModel:
        """The resident pipeline of `name` (made most recently used), loading it when absent."""
        with self._lock:
            entry = self._resident.get(name)
            if entry is not None:
                self._resident.move_to_end(name)
                return LoadedModel(name, entry.pipeline, entry.size_bytes, cold=False, load_s=0.0)
        return self._load(name)

    def _load(self, name: str) -> LoadedModel:
        model_dir = self.model_dir(name)
        if not (model_dir / "model_index.json").is_file():
            raise ModelLoadError(f"model {name!r}: no pipeline at {model_dir} (model_index.json missing)")
        # Make room first, judging by the weight files: the new model must not meet the old ones on the
        # device if together they would not fit.
        self._evict_to_fit(weights_on_disk(model_dir), keep=None)
        started = time.perf_counter()
        pipeline = self._load_with_oom_retry(name, model_dir)
        load_s = time.perf_counter() - started
        size = pipeline_bytes(pipeline)
        with self._lock:
            self._resident[name] = _Resident(pipeline, size)
            self._loads[name] += 1
        self._evict_to_fit(0, keep=name)
        log.info("model loaded", model=name, load_s=round(load_s, 3), size_mb=round(size / 2**20, 1))
        return LoadedModel(name, pipeline, size, cold=True, load_s=load_s)

    def _load_with_oom_retry(self, name: str, model_dir: Path) -> StableDiffusionPipeline:
        """Load; when the device runs out of memory, evict every resident model and try once more."""
        try:
            return self._call_loader(name, model_dir)
        except torch.OutOfMemoryError:
            log.warning("out of memory loading a model: evicting all resident models", model=name)
            self._evict_all()
        try:
            return self._call_loader(name, model_dir)
        except torch.OutOfMemoryError as err:
            self.release_memory()
            raise ModelOutOfMemory(f"model {name!r}: out of memory on {self.device}: {err}") from err

    def _call_loader(self, name: str, model_dir: Path) -> StableDiffusionPipeline:
        try:
            return self._loader(model_dir, self.device, self.dtype)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # diffusers raises many types (OSError, ValueError, KeyError, ...)
            raise ModelLoadError(f"model {name!r}: cannot load {model_dir}: {err}") from err

    # ----- eviction --------------------------------------------------------------------------------
    def _evict_to_fit(self, incoming_bytes: int, keep: str | None) -> None:
        """Evict least recently used models (never `keep`) until the residents plus `incoming_bytes`
        fit the budget and the count limit. A lone model larger than the budget still stays."""
        incoming_count = 0 if keep is not None else 1
        evicted: list[str] = []
        with self._lock:
            while True:
                used = sum(e.size_bytes for e in self._resident.values()) + incoming_bytes
                count = len(self._resident) + incoming_count
                if used <= self.memory_budget_bytes and count <= self.max_models:
                    break
                victim = next((n for n in self._resident if n != keep), None)
                if victim is None:
                    break
                del self._resident[victim]
                evicted.append(victim)
        if evicted:
            self.release_memory()
            log.info("models evicted", evicted=evicted, budget_gb=round(self.memory_budget_bytes / GIB, 3))

    def _evict_all(self) -> None:
        with self._lock:
            self._resident.clear()
        self.release_memory()

    def release_memory(self) -> None:
        # Dropping the last reference frees CPU tensors; CUDA keeps freed blocks cached until asked.
        gc.collect()
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            torch.cuda.empty_cache()
