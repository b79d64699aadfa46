"""The tiny world's text-to-image pipeline: a short recipe learns, and the shipped pipeline, loaded as
the executor loads SD 1.5, draws what its prompts ask for (as the judge reads it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.executor.models import load_pipeline
from tinyworld.judge import Judge
from tinyworld.quality import CHANCE, STEP_COUNTS, measure_quality, spearman
from tinyworld.scorer import load_scorer
from tinyworld.text_encoder import TextEncoderRecipe, build_tokenizer, train_text_encoder
from tinyworld.text_to_image import UnetRecipe, judge_generated, save_pipeline, train_unet
from tinyworld.vae import load_vae
from tinyworld.weights import JUDGE_DIR, PIPELINE_DIR, SCORER_DIR, VAE_DIR

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shipped():
    return load_pipeline(PIPELINE_DIR, "cpu", torch.float32)


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge.load(JUDGE_DIR)


@pytest.mark.slow
def test_a_short_recipe_lowers_the_loss_and_saves_a_loadable_pipeline(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    text_encoder, _ = train_text_encoder(
        TextEncoderRecipe(train_images=256, steps=12, batch=32, warmup=2, eval_images=8), tokenizer
    )
    recipe = UnetRecipe(train_images=512, steps=40, batch=16, lr=1e-3, warmup=5)
    pipeline, card = train_unet(recipe, load_vae(VAE_DIR), text_encoder, tokenizer)
    assert card["last_loss"] < 0.5 * card["first_loss"], card
    save_pipeline(pipeline, tmp_path / "pipeline")
    again = load_pipeline(tmp_path / "pipeline", "cpu", torch.float32)
    assert again.vae.config.scaling_factor == pytest.approx(pipeline.vae.config.scaling_factor)
    assert again.unet.config.sample_size * again.vae_scale_factor == 32


@pytest.mark.slow
def test_the_shipped_pipeline_draws_what_its_prompts_ask(shipped, judge: Judge) -> None:
    """On 40 validation prompts at 20 DDIM steps, the judge reads colour, shape and position as asked
    far above chance (1/6, 1/4, 1/5)."""
    agreement = judge_generated(shipped, judge, 40, 20)
    assert agreement["colour"] >= 0.85 and agreement["position"] >= 0.75, agreement
    assert agreement["shape"] >= 0.7, agreement


@pytest.mark.slow
def test_quality_rises_with_steps(shipped, judge: Judge) -> None:
    curve = measure_quality(shipped, judge, load_scorer(SCORER_DIR), "shipped", samples=24, steps=(1, 4, 20))
    assert curve.clip[0] < curve.clip[-1]
    assert curve.judge["color"][-1] > 2 * CHANCE["color"]
    data = curve.to_json()
    assert set(data) >= {"model", "samples", "steps", "clip", "judge"}
    assert data["steps"] == [1, 4, 20] and set(data["judge"]) == {"color", "shape", "position"}
    assert STEP_COUNTS == (1, 2, 3, 5, 8, 12, 20, 30)


def test_spearman_is_rank_correlation_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [0.1, 0.5, 0.7, 0.9]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [0.5, 0.5, 0.9]) == pytest.approx(0.866, abs=1e-3)
