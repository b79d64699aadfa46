"""The split curve: every user's images at each split point, scored for prompt and personal fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyworld.judge import Judge
from tinyworld.personal import STYLE_ATTRIBUTES, AdapterBank
from tinyworld.scorer import load_scorer
from tinyworld.split_curve import measure_split_curve
from tinyworld.text_to_image import load_pipeline
from tinyworld.weights import PIPELINE_DIR, SCORER_DIR, STYLE_JUDGE_DIR, USER_STYLES, USERS_DIR

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def curve():  # type: ignore[no-untyped-def]
    pipeline = load_pipeline(PIPELINE_DIR)
    bank = AdapterBank(pipeline)
    users = {user: USER_STYLES[user] for user in ("ana", "cai")}
    for user in users:
        bank.load(user, USERS_DIR / user)
    style_judge = Judge.load(STYLE_JUDGE_DIR, STYLE_ATTRIBUTES)
    return measure_split_curve(
        pipeline, bank, users, style_judge, load_scorer(SCORER_DIR), samples=8, steps=4, splits=(0, 2, 4)
    )


@pytest.mark.slow
def test_a_split_at_the_last_step_is_the_base_model(curve) -> None:  # type: ignore[no-untyped-def]
    # Split at T the personal model never runs: each user's personal fidelity is the base model's.
    for user, curves in curve.per_user.items():
        assert curves["personal"][-1] == curve.base_personal[user]
    clips = np.array([curves["clip"] for curves in curve.per_user.values()])
    assert np.allclose(clips[:, -1], clips[0, -1])  # the same images for every user


@pytest.mark.slow
def test_points_pool_the_users(curve) -> None:  # type: ignore[no-untyped-def]
    assert [point["split"] for point in curve.points()] == [0, 2, 4]
    for i, point in enumerate(curve.points()):
        assert point["personal"] == pytest.approx(
            np.mean([c["personal"][i] for c in curve.per_user.values()])
        )
        assert point["accuracy"] == pytest.approx(point["clip"] * point["personal"])
        assert -1.0 <= point["clip"] <= 1.0 and 0.0 <= point["personal"] <= 1.0
