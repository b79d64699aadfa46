"""Trainer test set-up: torch at one thread (the machines are small and shared)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def single_threaded_torch() -> None:
    torch.set_num_threads(1)
