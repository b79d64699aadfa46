"""Evaluator test set-up: one torch thread (shared CPUs), Hugging Face offline, one tiny scorer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from services.evaluator.clip_scorer import ClipScorer


@pytest.fixture(scope="session", autouse=True)
def offline_single_threaded() -> Iterator[None]:
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # any attempt to download fails loudly instead
        yield


@pytest.fixture(scope="session")
def tiny_scorer() -> ClipScorer:
    return ClipScorer.build("tiny")
