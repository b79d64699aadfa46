"""Shared fixtures of the executor tests: the tiny Stable Diffusion pipeline with seeded random weights
(plumbing) and the trained tiny-world pipeline (images that mean something), once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

TINY = "tiny"
WORLD = "tinyworld"


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the tiny pipeline (seed 0) as `tiny/`; tests must not modify it."""
    from services.executor.tiny import make_tiny

    torch.set_num_threads(1)  # the machine's cores are shared with other work
    models_dir = tmp_path_factory.mktemp("models")
    make_tiny(models_dir / TINY, seed=0)
    return models_dir


@pytest.fixture(scope="session")
def world_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the shipped, trained tiny-world pipeline as `tinyworld/`."""
    from tinyworld.weights import PIPELINE_DIR

    torch.set_num_threads(1)
    models_dir = tmp_path_factory.mktemp("world-models")
    shutil.copytree(PIPELINE_DIR, models_dir / WORLD)
    return models_dir
