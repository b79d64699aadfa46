"""The model registry on the tiny pipeline: models load once and stay warm, the least recently used
are evicted under a memory budget or a count limit and reload on demand, load errors are clear."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from services.executor.models import (
    ModelLoadError,
    ModelOutOfMemory,
    ModelRegistry,
    load_pipeline,
    pipeline_bytes,
    weights_on_disk,
)
from tests.services.executor.conftest import TINY

GIB = 2**30


@pytest.fixture
def models_dir(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """Three model names (a, b, c) sharing the tiny pipeline's files."""
    for name in ("a", "b", "c"):
        (tmp_path / name).symlink_to(tiny_models_dir / TINY, target_is_directory=True)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_bytes(tiny_models_dir: Path) -> int:
    return pipeline_bytes(load_pipeline(tiny_models_dir / TINY, "cpu", torch.float32))


def registry(models_dir: Path, budget_bytes: int = GIB, max_models: int = 8, **kw: object) -> ModelRegistry:
    return ModelRegistry(models_dir, memory_budget_bytes=budget_bytes, max_models=max_models, **kw)


def test_a_model_loads_once_and_stays_warm(models_dir: Path, tiny_bytes: int) -> None:
    models = registry(models_dir)
    first = models.get("a")
    assert first.cold and first.load_s > 0 and first.size_bytes == tiny_bytes
    for _ in range(2):
        warm = models.get("a")
        assert not warm.cold and warm.load_s == 0.0 and warm.pipeline is first.pipeline
    assert models.loads == {"a": 1}
    assert models.resident() == ("a",) and models.resident_bytes == tiny_bytes


def test_the_measured_size_is_the_weights(models_dir: Path, tiny_bytes: int) -> None:
    # float32 weights: the safetensors files hold the same bytes plus small headers.
    on_disk = weights_on_disk(models_dir / "a")
    assert tiny_bytes <= on_disk < tiny_bytes * 1.01
    half = registry(models_dir, dtype="bfloat16").get("a")
    assert half.size_bytes == pytest.approx(tiny_bytes / 2, rel=0.01)  # a few integer buffers stay
    assert half.pipeline.unet.dtype == torch.bfloat16


@pytest.mark.slow
def test_the_least_recently_used_is_evicted_under_the_budget_and_reloads(
    models_dir: Path, tiny_bytes: int
) -> None:
    models = registry(models_dir, budget_bytes=int(tiny_bytes * 2.5))  # room for two
    models.get("a")
    models.get("b")
    models.get("a")  # b is now the least recently used
    assert models.resident() == ("a", "b")
    models.get("c")
    assert models.resident() == ("c", "a")
    assert models.loads == {"a": 1, "b": 1, "c": 1}
    reloaded = models.get("b")
    assert reloaded.cold and models.resident() == ("b", "c")
    assert models.loads == {"a": 1, "b": 2, "c": 1}
    assert models.resident_bytes == 2 * tiny_bytes


@pytest.mark.slow
def test_the_count_limit_evicts_too(models_dir: Path) -> None:
    models = registry(models_dir, max_models=1)
    models.get("a")
    models.get("b")
    assert models.resident() == ("b",)
    assert models.get("a").cold and models.loads == {"a": 2, "b": 1}


def test_a_model_larger_than_the_budget_still_runs_alone(models_dir: Path, tiny_bytes: int) -> None:
    models = registry(models_dir, budget_bytes=tiny_bytes // 2)
    models.get("a")
    loaded = models.get("b")
    assert loaded.cold and models.resident() == ("b",)  # never the one being returned


def test_missing_and_unsafe_names_fail_clearly(models_dir: Path) -> None:
    models = registry(models_dir)
    with pytest.raises(ModelLoadError, match=r"model 'nope': no pipeline at .*nope"):
        models.get("nope")
    for name in ("..", "../a", "a/unet", ""):
        with pytest.raises(ModelLoadError, match="invalid model name"):
            models.get(name)
    assert models.loads == {} and models.resident() == ()


def test_broken_weights_fail_as_a_load_error(tiny_models_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models_dir / TINY, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    models = registry(tmp_path)
    with pytest.raises(ModelLoadError, match="model 'broken': cannot load"):
        models.get("broken")
    assert models.resident() == ()


@pytest.mark.slow
def test_out_of_memory_while_loading_evicts_everything_and_retries(models_dir: Path) -> None:
    # A CPU cannot run out of device memory on demand: this loader raises what CUDA raises, a set number
    # of times, then loads for real.
    failures = {"left": 1}

    def loader(model_dir: Path, device: str, dtype: torch.dtype):
        if model_dir.name == "b" and failures["left"] > 0:
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory")
        return load_pipeline(model_dir, device, dtype)

    models = registry(models_dir, loader=loader)
    models.get("a")
    assert models.get("b").cold
    assert models.resident() == ("b",)  # a made way

    failures["left"] = 2  # fails again after the eviction: a clear out-of-memory error
    with pytest.raises(ModelOutOfMemory, match="model 'b': out of memory on cpu"):
        registry(models_dir, loader=loader).get("b")
