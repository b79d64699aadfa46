"""The tiny world's scenes: captions from the grammar and back, deterministic drawings, disjoint splits."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tinyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    RESOLUTION,
    SPLIT_SEED_BASE,
    Scene,
    parse_caption,
    random_scene,
    render,
    render_batch,
    split_scenes,
)


def test_captions_follow_the_grammar_and_parse_back() -> None:
    scene = Scene("triangle", "red", "small", "left", 2, "blue")
    assert scene.caption == "two small red triangles on the left, blue background"
    assert Scene("cross", "white", "large", "center", 2, "gray").caption.startswith("two large white crosses")
    assert Scene("circle", "green", "large", "top", 1, "black").caption == (
        "a large green circle at the top, black background"
    )
    rng = random.Random(0)
    for _ in range(500):
        scene = random_scene(rng)
        assert parse_caption(scene.caption) == scene
    with pytest.raises(ValueError, match="not a tiny-world caption"):
        parse_caption("a red fox in snow")
    with pytest.raises(ValueError, match="unknown shape"):
        Scene("hexagon", "red", "small", "left", 1, "blue")


def test_drawings_are_deterministic_per_seed_and_vary_across_seeds() -> None:
    scene = Scene("square", "yellow", "large", "right", 1, "green")
    first, again, other = (np.asarray(render(scene, seed)) for seed in (5, 5, 6))
    assert first.shape == (RESOLUTION, RESOLUTION, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_object_sits_where_the_caption_says_in_its_colour() -> None:
    """The pixels furthest from the background colour lie in the named half, near the named colour."""
    for seed, position in enumerate(("left", "right", "top", "bottom")):
        scene = Scene("square", "red", "large", position, 1, "gray")
        image = np.asarray(render(scene, seed)).astype(float)
        distance = np.abs(image - np.array(BACKGROUNDS["gray"])).sum(-1)
        ys, xs = np.nonzero(distance > 150)
        half = RESOLUTION / 2
        inside = {"left": xs < half, "right": xs >= half, "top": ys < half, "bottom": ys >= half}[position]
        assert inside.mean() > 0.95
        colour = image[ys, xs].mean(0)
        assert np.abs(colour - np.array(COLOURS["red"])).max() < 40


def test_splits_are_disjoint_by_seed_and_by_held_out_combinations() -> None:
    train, test = split_scenes("train", 3000), split_scenes("test", 500)
    assert all((s.colour, s.shape) not in HELD_OUT for s, _ in train)
    assert all((s.colour, s.shape) in HELD_OUT for s, _ in test)
    seeds = {name: {seed for _, seed in split_scenes(name, 200)} for name in SPLIT_SEED_BASE}
    names = list(seeds)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not seeds[a] & seeds[b]
    assert split_scenes("validation", 50) == split_scenes("validation", 50)
    assert render_batch(train[:4]).shape == (4, RESOLUTION, RESOLUTION, 3)
