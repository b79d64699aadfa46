"""The judge: a short recipe learns, weights round-trip as safetensors + JSON, and the shipped judge
reads fresh renders right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyworld.judge import ATTRIBUTES, Judge, JudgeRecipe, labels_of, train_judge
from tinyworld.scenes import Scene, render_batch, split_scenes
from tinyworld.weights import JUDGE_DIR

torch.set_num_threads(1)


@pytest.mark.slow
def test_a_short_recipe_lowers_the_loss_and_round_trips(tmp_path: Path) -> None:
    recipe = JudgeRecipe(
        train_images=2048, validation_images=128, epochs=3, batch=64, lr=5e-3, width=16, hidden=32
    )
    judge, card = train_judge(recipe)
    assert card["last_loss"] < 0.8 * card["first_loss"]
    assert set(card["validation_accuracy"]) == set(ATTRIBUTES)
    judge.save(tmp_path, card)
    again = Judge.load(tmp_path)
    images = render_batch(split_scenes("validation", 16))
    assert again.predict(images) == judge.half().float().predict(images)


def test_labels_index_the_attribute_values() -> None:
    scene = Scene("cross", "white", "large", "bottom", 2, "brown")
    labels = labels_of(scene)
    assert {name: ATTRIBUTES[name][i] for name, i in labels.items()} == {
        "shape": "cross", "colour": "white", "size": "large", "position": "bottom", "count": "2",
        "background": "brown",
    }  # fmt: skip


def test_a_directory_that_is_no_judge_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a judge"):
        Judge.load(tmp_path)


def test_the_shipped_judge_reads_fresh_renders_right() -> None:
    """Scenes of the test split (held-out colour-shape pairs, seeds it never saw): every attribute read
    right at least 95% of the time, far above chance (1/6 to 1/2)."""
    judge = Judge.load(JUDGE_DIR)
    pairs = split_scenes("test", 400)
    accuracy = judge.agreement(render_batch(pairs), [scene for scene, _ in pairs])
    assert min(accuracy.values()) >= 0.95, accuracy
    assert np.isfinite(list(accuracy.values())).all()
