"""The tiny Stable Diffusion pipeline: an offline CLIP tokenizer matching open_clip's, deterministic
weights from a seed, saved as a model directory that loads through the registry like real weights."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionPipeline

from services.cli import main as eat_main
from services.executor.models import ModelRegistry
from services.executor.tiny import CONTEXT_LENGTH, build_tiny_pipeline, clip_bpe_vocabulary, make_tiny
from tests.services.executor.conftest import TINY

PROMPT = "A red fox, in the snow at dawn!"


def weights_of(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved pipeline, keyed by file and tensor name."""
    tensors = {}
    for path in sorted(model_dir.rglob("*.safetensors")):
        for name, tensor in safetensors.torch.load_file(str(path)).items():
            tensors[f"{path.relative_to(model_dir)}:{name}"] = tensor
    return tensors


def test_the_vocabulary_is_clips() -> None:
    vocab, merges = clip_bpe_vocabulary()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["a</w>"] == 320  # byte symbols first, then end-of-word forms


def test_the_saved_tokenizer_matches_open_clips(tiny_models_dir: Path) -> None:
    pipeline = StableDiffusionPipeline.from_pretrained(str(tiny_models_dir / TINY), local_files_only=True)
    ours = pipeline.tokenizer(PROMPT, padding="max_length", max_length=CONTEXT_LENGTH).input_ids
    reference = open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)([PROMPT])[0].tolist()
    length = reference.index(49407) + 1  # open_clip pads with 0, SD tokenizers with end-of-text
    assert ours[:length] == reference[:length]
    assert set(ours[length:]) == {49407} and len(ours) == CONTEXT_LENGTH
    assert pipeline.text_encoder.config.vocab_size == 49408


def test_make_tiny_is_deterministic_through_the_cli(tiny_models_dir: Path, tmp_path: Path) -> None:
    assert eat_main(["models", "make-tiny", str(tmp_path / "again"), "--seed", "0"]) == 0
    first, again = weights_of(tiny_models_dir / TINY), weights_of(tmp_path / "again")
    assert first.keys() == again.keys() and len(first) > 50
    assert all(torch.equal(first[name], again[name]) for name in first)
    for sub in ("unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"):
        assert (tiny_models_dir / TINY / sub).read_bytes() == (tmp_path / "again" / sub).read_bytes()

    make_tiny(tmp_path / "other", seed=1)
    other = weights_of(tmp_path / "other")
    assert not torch.equal(
        first["unet/diffusion_pytorch_model.safetensors:conv_in.weight"],
        other["unet/diffusion_pytorch_model.safetensors:conv_in.weight"],
    )


def test_building_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_pipeline(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_an_existing_directory_is_replaced_only_when_asked(tmp_path: Path, capsys) -> None:
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        make_tiny(target)
    with pytest.raises(SystemExit):
        eat_main(["models", "make-tiny", str(target)])
    assert "exists" in capsys.readouterr().err
    assert (target / "keep.txt").exists()
    assert eat_main(["models", "make-tiny", str(target), "--force"]) == 0
    assert not (target / "keep.txt").exists() and (target / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging folder left behind


def test_it_loads_through_the_registry_and_generates(tiny_models_dir: Path) -> None:
    registry = ModelRegistry(tiny_models_dir, memory_budget_bytes=2**30, max_models=2)
    loaded = registry.get(TINY)
    pipeline = loaded.pipeline
    assert isinstance(pipeline, StableDiffusionPipeline) and loaded.cold
    assert pipeline.vae_scale_factor == 8  # SD's factor: 64 px images denoise as 8x8 latents
    assert pipeline.safety_checker is None
    generator = torch.Generator().manual_seed(0)
    image = pipeline("a fox", num_inference_steps=10, height=64, width=64, generator=generator).images[0]
    assert image.size == (64, 64)
