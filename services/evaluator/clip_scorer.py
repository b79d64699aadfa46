"""CLIP scores with open_clip: the cosine similarity of an image's and its prompt's normalised
embeddings, the EAT paper's scale (in [-1, 1], in practice [0, 0.4]; not multiplied by 100).

Nothing is downloaded: "tiny" is a small CLIP built from a config with seeded random weights (for
tests and sim runs: it checks the plumbing, its scores mean nothing), and a real architecture is
built with `pretrained=None` and then given weights from a local checkpoint. The tokenizer is
open_clip's BPE tokenizer with its bundled vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import safetensors.torch
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from services.evaluator.settings import LOCAL_DIR, TINY_MODEL

# embed 32; vision 64 wide, 2 layers, 16 px patches of 64 px images; text 64 wide, 2 layers, CLIP's
# context and vocabulary (so the standard tokenizer fits).
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_SEED = 0


def build_tiny_model(seed: int = TINY_SEED) -> open_clip.CLIP:
    """The tiny CLIP with random weights from `seed`, leaving the global torch RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**TINY_CONFIG)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, or a torch file read with weights_only (never unpickled)."""
    if path.suffix == ".safetensors":
        state = safetensors.torch.load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # training checkpoints nest the weights
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    # Weights saved from DistributedDataParallel carry a "module." prefix.
    return {key.removeprefix("module."): value for key, value in state.items()}


class ClipScorer:
    """An open_clip model with its tokenizer and preprocessing; scores (image, prompt) pairs."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        preprocess: Callable[[Image.Image], torch.Tensor],
        name: str,
        device: str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.device = device

    @classmethod
    def build(cls, clip_model: str, checkpoint: Path | None = None, device: str = "cpu") -> ClipScorer:
        """ "tiny" (weights from `checkpoint` when given), an open_clip architecture name whose
        weights come from `checkpoint`, or an open_clip model directory "local-dir:<dir>"."""
        if clip_model == TINY_MODEL:
            model = build_tiny_model()
            tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
        elif clip_model.startswith(LOCAL_DIR):  # open_clip reads the config and weights from the directory
            model = open_clip.create_model(clip_model, device="cpu").float()
            tokenizer = open_clip.get_tokenizer(clip_model)
        else:
            if checkpoint is None:
                raise ValueError(f"open_clip model {clip_model!r} needs a local checkpoint")
            model = open_clip.create_model(clip_model, pretrained=None, device="cpu")
            tokenizer = open_clip.get_tokenizer(clip_model)
        if checkpoint is not None:
            model.load_state_dict(load_state_dict(checkpoint), strict=True)
        preprocess = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), False)
        return cls(model, tokenizer, preprocess, clip_model, device)

    @property
    def evaluator_model(self) -> str:
        return f"open_clip:{self.name}"

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """CLIP score of each image with the prompt at the same position."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images]).to(self.device)
        tokens = self.tokenizer(list(prompts)).to(self.device)
        image_embeddings = self.model.encode_image(pixels, normalize=True)
        text_embeddings = self.model.encode_text(tokens, normalize=True)
        return (image_embeddings * text_embeddings).sum(dim=-1).float().cpu().tolist()
