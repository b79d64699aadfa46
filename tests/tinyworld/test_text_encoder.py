"""The text-to-image model's tokenizer and text encoder: the world's words split as CLIP splits them, any
prompt still tokenizes, and a short contrastive recipe learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.executor.tiny import build_tokenizer as build_full_clip_tokenizer
from tinyworld.scenes import split_scenes
from tinyworld.text_encoder import (
    CONTEXT_LENGTH,
    TextEncoderRecipe,
    build_tokenizer,
    tokenize,
    train_text_encoder,
    world_words,
)

torch.set_num_threads(1)


def test_captions_split_into_the_tokens_clips_own_tokenizer_gives(tmp_path: Path) -> None:
    small = build_tokenizer(tmp_path / "small")
    full = build_full_clip_tokenizer(tmp_path)
    for scene, _ in split_scenes("validation", 50):
        assert small.tokenize(scene.caption) == full.tokenize(scene.caption)
    assert len(small) < 700  # bytes, the world's merges and two special tokens, not 49,408


def test_any_prompt_tokenizes_and_fits_the_context(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path)
    prompt = "a purple dog, sketched in 1920 — ünïcode"
    ids = tokenize(tokenizer, [prompt, ""])
    assert ids.shape == (2, CONTEXT_LENGTH)
    # Unknown words fall apart into byte tokens (never the unknown token); the long prompt is cut.
    known = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(prompt))
    assert ids[0, 1:-1].tolist() == known[: CONTEXT_LENGTH - 2] and int(ids.max()) < len(tokenizer)
    assert {"purple", "crosses", "center", ","} <= set(world_words())


@pytest.mark.slow
def test_a_short_contrastive_recipe_lowers_the_loss(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path)
    recipe = TextEncoderRecipe(train_images=512, steps=40, batch=64, warmup=5, eval_images=32)
    text_encoder, card = train_text_encoder(recipe, tokenizer)
    assert card["last_loss"] < 0.8 * card["first_loss"], card
    states = text_encoder(tokenize(tokenizer, ["a small red circle on the left, black background"]))[0]
    assert states.shape == (1, CONTEXT_LENGTH, text_encoder.config.hidden_size)
