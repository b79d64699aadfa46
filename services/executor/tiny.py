"""A tiny Stable Diffusion pipeline with seeded random weights, for tests and CPU runs.

It has the real architecture of SD 1.x in miniature (CLIP text encoder, UNet with cross-attention,
KL autoencoder with a downsampling factor of 8, DDIM scheduler) and is saved with `save_pretrained`
(safetensors), so executors load it through exactly the code that loads real weights. Its images mean
nothing; they exercise the plumbing.

Nothing is downloaded: the CLIP tokenizer's vocabulary and merges are rebuilt from the BPE file that
open_clip ships (the same BPE as OpenAI's CLIP, so token ids match real SD tokenizers).
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from open_clip.tokenizer import bytes_to_unicode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_RESOLUTION = 64  # pixels; latents are 8x8
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CONTEXT_LENGTH = 77  # CLIP's prompt length in tokens, as in every SD 1.x/2.x tokenizer
# OpenAI CLIP keeps the first 48,894 merges of the BPE file (49,152 ids - 256 bytes - 2 special tokens);
# open_clip's SimpleTokenizer and the transformers CLIPTokenizer both cut the file there.
MERGES_KEPT = 49152 - 256 - 2

UNET_CONFIG: dict[str, Any] = {
    "sample_size": TINY_RESOLUTION // 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
# Four blocks give SD's factor of 8 between pixels and latents; 32 channels each keeps it fast.
VAE_CONFIG: dict[str, Any] = {
    "sample_size": TINY_RESOLUTION,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 32, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": CONTEXT_LENGTH,
    "projection_dim": 32,
}
# SD 1.x's noise schedule.
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def clip_bpe_vocabulary(bpe_path: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (token -> id) and BPE merges ("a b" lines), built as open_clip builds them."""
    path = Path(bpe_path or open_clip.tokenizer.default_bpe())
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        merges = lines.read().split("\n")[1 : MERGES_KEPT + 1]  # the first line is a version header
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + "</w>" for symbol in byte_symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def build_tokenizer(work_dir: Path) -> CLIPTokenizer:
    """A CLIPTokenizer read from vocab.json and merges.txt written into `work_dir`, the files real SD
    checkpoints carry (so `save_pretrained` stores the same layout)."""
    vocab, merges = clip_bpe_vocabulary()
    vocab_file, merges_file = work_dir / "vocab.json", work_dir / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(
        str(work_dir), model_max_length=CONTEXT_LENGTH, local_files_only=True
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny pipeline with weights drawn from `seed`; the global torch RNG is left as it was."""
    with tempfile.TemporaryDirectory(prefix="eat-tiny-tokenizer-") as work_dir:
        tokenizer = build_tokenizer(Path(work_dir))
    with torch.random.fork_rng(devices=[]):
        # One seed per component: the weights of each do not depend on how the others are built.
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(seed + 2)
        text_config = CLIPTextConfig(vocab_size=len(tokenizer), **TEXT_CONFIG)
        text_encoder = CLIPTextModel(text_config)
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, DDIMScheduler(**SCHEDULER_CONFIG))


def assemble_pipeline(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: Any,
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline of these parts in eval mode, without SD's safety checker."""
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_tiny(out_dir: Path, seed: int = 0, *, overwrite: bool = False) -> Path:
    """Build the tiny pipeline and save it as a model directory (safetensors) at `out_dir`.

    It is written next to `out_dir` and renamed into place, so an executor never loads a half-written
    model. An existing `out_dir` is replaced only with `overwrite`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        build_tiny_pipeline(seed).save_pretrained(str(staging), safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
