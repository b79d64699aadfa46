"""Split-point inference: running steps [0, s) and then [s, T), batched or one request at a time, gives
the image one uninterrupted run gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.executor import split_phase
from tinyworld.scenes import RESOLUTION, split_scenes
from tinyworld.text_to_image import generate, load_pipeline
from tinyworld.weights import PIPELINE_DIR

torch.set_num_threads(1)
STEPS = 6


@pytest.fixture(scope="module")
def pipeline():  # type: ignore[no-untyped-def]
    return load_pipeline(PIPELINE_DIR)


def prompts_and_seeds(n: int) -> tuple[list[str], list[int]]:
    pairs = split_scenes("validation", n)
    return [scene.caption for scene, _ in pairs], [seed for _, seed in pairs]


@pytest.mark.slow
@pytest.mark.parametrize("split", [0, 2, STEPS])
def test_two_phases_give_the_uninterrupted_image(pipeline, split: int) -> None:  # type: ignore[no-untyped-def]
    prompts, seeds = prompts_and_seeds(3)
    whole = generate(pipeline, prompts, STEPS, seeds)
    early = split_phase.advance(
        pipeline, split_phase.begin(pipeline, prompts, seeds, STEPS, RESOLUTION), split
    )
    # The batch is split after the shared phase: each request finishes alone, as on its own device.
    finished = [split_phase.advance(pipeline, one, STEPS) for one in split_phase.split(early)]
    images = np.concatenate([split_phase.decode(pipeline, one) for one in finished])
    # A batch of one and a batch of three round differently in the last float bits, so a pixel may
    # differ by a level or two; the images are otherwise the same.
    difference = np.abs(images.astype(int) - whole)
    assert difference.max() <= 2 and (difference == 0).mean() > 0.95


def test_a_batch_and_single_requests_agree(pipeline) -> None:  # type: ignore[no-untyped-def]
    prompts, seeds = prompts_and_seeds(4)
    batched = split_phase.advance(pipeline, split_phase.begin(pipeline, prompts, seeds, STEPS, RESOLUTION), 3)
    for i in range(4):
        alone = split_phase.begin(pipeline, prompts[i : i + 1], seeds[i : i + 1], STEPS, RESOLUTION)
        alone = split_phase.advance(pipeline, alone, 3)
        assert torch.allclose(alone.latents[0], batched.latents[i], atol=1e-4)


def test_phases_refuse_to_run_backwards_or_decode_early(pipeline) -> None:  # type: ignore[no-untyped-def]
    prompts, seeds = prompts_and_seeds(1)
    phase = split_phase.advance(pipeline, split_phase.begin(pipeline, prompts, seeds, STEPS, RESOLUTION), 2)
    with pytest.raises(ValueError, match="cannot advance"):
        split_phase.advance(pipeline, phase, 1)
    with pytest.raises(ValueError, match="cannot advance"):
        split_phase.advance(pipeline, phase, STEPS + 1)
    with pytest.raises(ValueError, match="decoding after step 2"):
        split_phase.decode(pipeline, phase)
    with pytest.raises(ValueError, match="1 prompts but 2 seeds"):
        split_phase.begin(pipeline, prompts, [1, 2], STEPS, RESOLUTION)
