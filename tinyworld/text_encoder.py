"""The text-to-image model's text encoder: a transformers CLIPTextModel pretrained contrastively.

A text encoder learned from scratch together with the denoiser leaves the denoiser nothing to read for
a long time, so it ignores its prompts. This one is the text half of a small transformers `CLIPModel`
trained contrastively (as CLIP was) on the text-to-image model's own split (`train`), then kept frozen
while the UNet learns to read it. The scorer (`tinyworld/scorer.py`) is a separate model trained on
its own split, so the evaluator does not grade images with the encoder that made them.

The tokenizer is a standard `CLIPTokenizer` (vocab.json + merges.txt, as SD 1.5 ships) whose merges
are the subset of CLIP's BPE merges that the world's words use, in CLIP's order, so those words split
exactly as CLIP splits them. Every byte keeps a token, so any prompt still tokenizes; 49k unused token
embeddings would otherwise be most of the model's size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from services.executor.tiny import BOS_TOKEN, EOS_TOKEN, clip_bpe_vocabulary
from tinyworld.judge import to_tensor
from tinyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    PLACES,
    RESOLUTION,
    SHAPES,
    SIZES,
    plural,
    render_batch,
    split_scenes,
)
from tinyworld.training import card_basics, clip_loss, fit

CONTEXT_LENGTH = 24  # tokens; the longest caption has 16 with its start and end tokens
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": CONTEXT_LENGTH,
    "projection_dim": 64,
}
# Only for pretraining: a ViT over 8 px patches that the text half learns to agree with.
VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": RESOLUTION,
    "patch_size": 8,
    "projection_dim": 64,
}


@dataclass(frozen=True)
class TextEncoderRecipe:
    train_images: int = 24_000
    steps: int = 1_200
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    eval_images: int = 1_000


def world_words() -> list[str]:
    """Every word a caption of the world can hold (plurals and the comma included)."""
    words = {"a", "two", ",", "background", *SIZES, *COLOURS, *BACKGROUNDS}
    words |= set(SHAPES) | {plural(shape) for shape in SHAPES}
    for phrase in PLACES.values():
        words |= set(phrase.split())
    return sorted(words)


def merges_used(words: Iterable[str], ranked_merges: list[str]) -> list[str]:
    """The merges byte-pair encoding applies to `words` under CLIP's ranked merges, in CLIP's order.

    BPE merges, at each step, the adjacent pair of lowest rank; restricted to a subset that holds every
    merge a word used, the same pair stays lowest at every step, so the word splits as before."""
    rank = {tuple(merge.split()): index for index, merge in enumerate(ranked_merges)}
    used: set[tuple[str, str]] = set()
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            best, at = min((rank.get(pair, len(rank)), i) for i, pair in enumerate(pairwise(symbols)))
            if best == len(rank):
                break
            used.add((symbols[at], symbols[at + 1]))
            symbols[at : at + 2] = [symbols[at] + symbols[at + 1]]
    return [merge for merge in ranked_merges if tuple(merge.split()) in used]


def build_tokenizer(directory: Path) -> CLIPTokenizer:
    """Write vocab.json and merges.txt for the world's words into `directory` and load them."""
    full_vocab, full_merges = clip_bpe_vocabulary()
    merges = merges_used(world_words(), full_merges)
    byte_tokens = [token for token, index in full_vocab.items() if index < 512]  # bytes, then bytes + </w>
    tokens = byte_tokens + ["".join(merge.split()) for merge in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(
        str(directory), model_max_length=CONTEXT_LENGTH, local_files_only=True
    )


def text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TEXT_CONFIG,
    )


def build_clip(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPModel:
    config = CLIPConfig(
        text_config=text_config(tokenizer).to_dict(), vision_config=VISION_CONFIG, projection_dim=64
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids padded to the context, as the diffusers pipeline tokenizes a prompt."""
    return tokenizer(
        captions, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


def image_features(clip: CLIPModel, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)


def text_features(clip: CLIPModel, tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(clip.get_text_features(input_ids=tokens).pooler_output, dim=-1)


def train_text_encoder(
    recipe: TextEncoderRecipe, tokenizer: CLIPTokenizer, progress: Callable[[str], None] | None = None
) -> tuple[CLIPTextModel, dict[str, Any]]:
    """Pretrain a CLIPModel on the `train` split and return its text half (in eval mode) and a card."""
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    pairs = split_scenes("train", recipe.train_images)
    images = to_tensor(render_batch(pairs))
    tokens = tokenize(tokenizer, [scene.caption for scene, _ in pairs])
    clip = build_clip(tokenizer, recipe.seed)

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        image_emb, text_emb = image_features(clip, images[index]), text_features(clip, tokens[index])
        return clip_loss(image_emb, text_emb, clip.logit_scale.exp(), tokens[index])

    losses = fit(clip, loss_of, len(pairs), recipe, recipe.weight_decay, progress)
    card = card_basics(recipe, clip.text_model, losses, started) | attribute_probe(clip, tokenizer, recipe)
    text_encoder = CLIPTextModel(text_config(tokenizer))
    text_encoder.load_state_dict(clip.text_model.state_dict())
    return text_encoder.eval(), card


@torch.inference_mode()
def attribute_probe(clip: CLIPModel, tokenizer: CLIPTokenizer, recipe: TextEncoderRecipe) -> dict[str, Any]:
    """How often a validation image's own caption scores above every other caption of the world that
    differs from it in one attribute: evidence that the text side tells attributes apart."""
    pairs = split_scenes("validation", recipe.eval_images)
    captions = sorted({scene.caption for scene, _ in pairs})
    text_emb = text_features(clip, tokenize(tokenizer, captions))
    image_emb = image_features(clip, to_tensor(render_batch(pairs)))
    best = (image_emb @ text_emb.T).argmax(1)
    own = torch.tensor([captions.index(scene.caption) for scene, _ in pairs])
    return {"eval_split": "validation", "caption_retrieval_top1": float(np.mean((best == own).numpy()))}


def save_text_encoder(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, directory: Path) -> None:
    """`text_encoder/` and `tokenizer/` of a diffusers pipeline directory."""
    text_encoder.to(torch.float16).save_pretrained(directory / "text_encoder", safe_serialization=True)
    text_encoder.to(torch.float32)
    tokenizer.save_pretrained(directory / "tokenizer")


def encode(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """(n, CONTEXT_LENGTH, hidden) last hidden states, what the pipeline hands the UNet."""
    with torch.inference_mode():
        return text_encoder(tokenize(tokenizer, captions))[0]
