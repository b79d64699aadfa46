"""The stack with real diffusers executors on the tiny Stable Diffusion pipeline: tasks produce real
images, the evaluator scores them with its (tiny) open_clip model, nothing is simulated."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from eat.v1 import tasks_pb2
from policy_models.profiles import quality_of_steps
from services.client import Client
from services.evaluator.clip_scorer import ClipScorer
from services.evaluator.settings import TINY_MODEL
from services.executor.tiny import make_tiny
from services.stack import Stack

pytestmark = pytest.mark.slow
RESOLUTION = 64
PROMPTS = ("a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "a city street in rain")


def test_diffusers_executors_make_real_images_scored_by_clip(
    make_stack, amqp_url: str, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    make_tiny(models_dir / "tiny", seed=0)
    executor_env = {
        "EAT_RUNNER": "diffusers",
        "EAT_MODELS_DIR": str(models_dir),
        "EAT_RESOLUTION": str(RESOLUTION),
        "EAT_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    stack: Stack = make_stack(
        executors=2,
        time_scale=1.0,
        models=("tiny",),
        with_trainer=False,
        extra_env={"executor": executor_env},
    )
    client = Client(amqp_url)
    for i, prompt in enumerate(PROMPTS):
        client.submit(tasks_pb2.TaskSubmission(task_id=f"real-{i}", prompt=prompt, model="tiny", patches=1))
    done = client.wait({f"real-{i}" for i in range(len(PROMPTS))}, timeout_s=180.0)
    client.close()

    assert Counter(event.kind for event in done.values()) == {"completed": len(PROMPTS)}, done
    scorer = ClipScorer.build(TINY_MODEL)
    results_dir = (stack.config.work_dir / "results").resolve()
    for i, prompt in enumerate(PROMPTS):
        result = done[f"real-{i}"].message.result
        assert not result.simulated and len(result.gang) == 1
        path = Path(urlparse(result.image.uri).path)
        assert path.is_file() and path.is_relative_to(results_dir)
        with Image.open(path) as image:
            assert image.size == (RESOLUTION, RESOLUTION)
            # The quality is the evaluator's CLIP score of this very image, not the simulator's value.
            (expected,) = scorer.score([image.convert("RGB")], [prompt])
        assert result.quality == pytest.approx(expected, abs=1e-4)
        assert result.quality != pytest.approx(quality_of_steps(result.steps), abs=1e-4)
    assert all(code == 0 for code in stack.stop().values())
