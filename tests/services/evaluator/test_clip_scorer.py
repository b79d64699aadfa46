"""The open_clip scorer: the tiny model's determinism and scale, and weights from local checkpoints."""

from __future__ import annotations

import pickle  # only for the error class torch raises when it refuses to unpickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from PIL import Image

from services.common.settings import SettingsError
from services.evaluator.clip_scorer import ClipScorer, build_tiny_model
from services.evaluator.settings import EvaluatorSettings
from tests.services.evaluator.images import PROMPTS, candidate_images
from tinyworld.scenes import render_batch, split_scenes
from tinyworld.scorer import build_model, save_scorer, score_images, tokenizer


def test_tiny_scores_are_plain_cosines_in_range_and_deterministic(tiny_scorer: ClipScorer) -> None:
    images = candidate_images()
    scores = tiny_scorer.score(images, PROMPTS)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert ClipScorer.build("tiny").score(images, PROMPTS) == scores  # a second build, same weights

    # The paper's scale: cosine of the raw embeddings, not multiplied by 100 nor by the logit scale.
    with torch.inference_mode():
        pixels = torch.stack([tiny_scorer.preprocess(image) for image in images])
        image_embeddings = tiny_scorer.model.encode_image(pixels)
        text_embeddings = tiny_scorer.model.encode_text(tiny_scorer.tokenizer(PROMPTS))
    expected = F.cosine_similarity(image_embeddings, text_embeddings).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)


def test_scores_pair_images_and_prompts_by_position(tiny_scorer: ClipScorer) -> None:
    images = candidate_images()
    together = tiny_scorer.score(images, PROMPTS)
    alone = [tiny_scorer.score([image], [prompt])[0] for image, prompt in zip(images, PROMPTS, strict=True)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(np.round(together, 6))) == len(together)  # distinct, so a mix-up would show
    with pytest.raises(ValueError):
        tiny_scorer.score(images, PROMPTS[:2])


class ArbitraryObject:
    """Any pickled class: loading it would run code, so weights_only refuses it."""


def scorer_with_model(model: torch.nn.Module, like: ClipScorer) -> ClipScorer:
    return ClipScorer(model, like.tokenizer, like.preprocess, "tiny")


def test_tiny_weights_load_from_safetensors(tmp_path: Path, tiny_scorer: ClipScorer) -> None:
    other = build_tiny_model(seed=1)
    path = tmp_path / "tiny-seed1.safetensors"
    safetensors.torch.save_file(other.state_dict(), str(path))
    loaded = ClipScorer.build("tiny", checkpoint=path)
    images = candidate_images()
    expected = scorer_with_model(other, tiny_scorer).score(images, PROMPTS)
    assert loaded.score(images, PROMPTS) == pytest.approx(expected, abs=1e-6)
    assert loaded.score(images, PROMPTS) != pytest.approx(tiny_scorer.score(images, PROMPTS), abs=1e-4)


def test_torch_checkpoints_load_with_weights_only(tmp_path: Path, tiny_scorer: ClipScorer) -> None:
    """Nested training checkpoints with DDP "module." prefixes load too, without unpickling objects."""
    other = build_tiny_model(seed=2)
    path = tmp_path / "tiny-seed2.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in other.state_dict().items()}, "epoch": 3}, path)
    loaded = ClipScorer.build("tiny", checkpoint=path)
    images = candidate_images()
    assert loaded.score(images, PROMPTS) == pytest.approx(
        scorer_with_model(other, tiny_scorer).score(images, PROMPTS), abs=1e-6
    )

    bad = tmp_path / "object.pt"
    torch.save({"state_dict": ArbitraryObject()}, bad)
    with pytest.raises(pickle.UnpicklingError, match=r"[Ww]eights only"):
        ClipScorer.build("tiny", checkpoint=bad)


@pytest.mark.slow
def test_named_architecture_takes_its_weights_from_the_checkpoint(tmp_path: Path) -> None:
    """A real open_clip architecture (ViT-S-32, the smallest standard one) built with pretrained=None,
    weights from a local safetensors file, its own preprocessing size; nothing downloaded."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        reference = open_clip.create_model("ViT-S-32", pretrained=None)
    path = tmp_path / "vit-s-32.safetensors"
    safetensors.torch.save_file(reference.state_dict(), str(path))
    del reference
    scorer = ClipScorer.build("ViT-S-32", checkpoint=path)
    assert scorer.evaluator_model == "open_clip:ViT-S-32"
    assert scorer.preprocess(candidate_images(1)[0]).shape == (3, 224, 224)
    saved = safetensors.torch.load_file(str(path))
    assert torch.equal(scorer.model.state_dict()["text_projection"], saved["text_projection"])
    scores = scorer.score(candidate_images(2), PROMPTS[:2])
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(RuntimeError, match="state_dict"):
        ClipScorer.build("tiny", checkpoint=path)


def test_settings_require_a_checkpoint_for_real_models(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="EAT_CLIP_CHECKPOINT"):
        EvaluatorSettings.from_env({"EAT_CLIP_MODEL": "ViT-B-32"})
    settings = EvaluatorSettings.from_env(
        {"EAT_CLIP_MODEL": "ViT-B-32", "EAT_CLIP_CHECKPOINT": str(tmp_path / "w.safetensors")}
    )
    assert settings.clip_checkpoint == tmp_path / "w.safetensors"
    assert EvaluatorSettings.from_env({}).clip_checkpoint is None
    with pytest.raises(SettingsError):
        EvaluatorSettings.from_env({"EAT_BATCH_SIZE": "0"})


def test_an_open_clip_model_directory_loads_as_open_clip_loads_it(tmp_path: Path) -> None:
    """The tiny world's scorer layout (open_clip_config.json + open_clip_model.safetensors) through
    `local-dir:`: the same scores as the model it was saved from, up to half precision."""
    model = build_model(seed=3)
    save_scorer(model, tmp_path, card={})
    scorer = ClipScorer.build(f"local-dir:{tmp_path}")
    images = [Image.fromarray(image) for image in render_batch(split_scenes("validation", 3))]
    prompts = ["a small red circle on the left, gray background"] * 3
    expected = score_images(
        model.half().float(), tokenizer(), np.stack([np.asarray(i) for i in images]), prompts
    )
    assert scorer.score(images, prompts) == pytest.approx(expected, abs=1e-3)
    assert scorer.evaluator_model == f"open_clip:local-dir:{tmp_path}"


def test_settings_take_a_model_directory_without_a_checkpoint(tmp_path: Path) -> None:
    settings = EvaluatorSettings.from_env({"EAT_CLIP_MODEL": f"local-dir:{tmp_path}"})
    assert settings.clip_checkpoint is None
    with pytest.raises(SettingsError, match="no directory"):
        EvaluatorSettings.from_env({"EAT_CLIP_MODEL": f"local-dir:{tmp_path / 'missing'}"})
    with pytest.raises(SettingsError, match="goes with an architecture name"):
        EvaluatorSettings.from_env(
            {
                "EAT_CLIP_MODEL": f"local-dir:{tmp_path}",
                "EAT_CLIP_CHECKPOINT": str(tmp_path / "w.safetensors"),
            }
        )
