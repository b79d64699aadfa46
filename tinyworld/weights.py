"""Where the tiny world's trained models ship, and their model cards."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
JUDGE_DIR = WEIGHTS_ROOT / "judge"
SCORER_DIR = WEIGHTS_ROOT / "scorer"
PIPELINE_DIR = WEIGHTS_ROOT / "text-to-image"  # a diffusers pipeline directory
VAE_DIR = WEIGHTS_ROOT / "vae"
STYLE_JUDGE_DIR = WEIGHTS_ROOT / "style-judge"
USERS_DIR = WEIGHTS_ROOT / "users"  # one personal adapter per user: USERS_DIR / <user>
# The shipped users and their styles: one per style that differs from the plain world.
USER_STYLES = {"ana": "outline", "ben": "striped", "cai": "pastel", "dee": "shadow"}
CARD_MD = "CARD.md"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_card(directory: Path, kind: str, card: dict[str, Any]) -> Path:
    """CARD.md: what the model is, how it was trained (recipe, seed), what it measured, on what machine."""
    path = directory / CARD_MD
    lines = [f"# Tiny world {kind}", ""]
    if kind == "judge":
        recipe = card["recipe"]
        lines += [
            "Reads a scene's attributes (shape, colour, size, position, count, background) back from a "
            "32 px image of the tiny world (`tinyworld/scenes.py`). Trained on rendered images only, from "
            "the `judge` split (its own seeds), so it measures generated images without grading the "
            "evaluator's own scorer.",
            "",
            f"- Recipe (`tinyworld.judge.JudgeRecipe`): {recipe['train_images']} images, {recipe['epochs']} "
            f"epochs, batch {recipe['batch']}, AdamW with a one-cycle rate peaking at {recipe['lr']}, seed "
            f"{recipe['seed']}; {card['parameters']:,} parameters, stored in half precision.",
            f"- Loss {card['first_loss']:.3f} at the first step, {card['last_loss']:.4f} over the last 50.",
            f"- Accuracy on {recipe['validation_images']} validation images (all combinations): "
            + ", ".join(f"{name} {value:.3f}" for name, value in card["validation_accuracy"].items())
            + ".",
            f"- Trained in {card['train_s']:.0f} s on {cpu_model()} ({os.cpu_count()} cores), 2 torch "
            "threads.",
            "",
            "Reproduce: `eat models train-judge` (writes here).",
        ]
    elif kind == "scorer":
        recipe = card["recipe"]
        lines += [
            "The evaluator's CLIP scorer for the tiny world: a standard open_clip model (custom config: a "
            "ViT over 8 px patches of 32 px images, a 3-layer text transformer over open_clip's BPE tokens, "
            "64-dimensional embeddings) in open_clip's local-directory layout. Load it with "
            "`EAT_CLIP_MODEL=local-dir:tinyworld/weights/scorer`.",
            "",
            f"- Recipe (`tinyworld.scorer.ScorerRecipe`): contrastive (CLIP's symmetric loss) on "
            f"{recipe['train_images']} rendered scenes of the `scorer` split, which the text-to-image model "
            f"never sees; {recipe['steps']} steps of batch {recipe['batch']}, AdamW (lr {recipe['lr']}, "
            f"weight decay {recipe['weight_decay']}), {recipe['warmup']} warm-up steps then cosine, seed "
            f"{recipe['seed']}; {card['parameters']:,} parameters, stored in half precision.",
            f"- Loss {card['first_loss']:.3f} at the first step, {card['last_loss']:.4f} over the last 100.",
            f"- On {recipe['eval_images']} scenes of the `{card['eval_split']}` split (colour-shape pairs "
            "held out of the text-to-image model's training): mean CLIP score with the own caption "
            f"{card['own_caption_score']:.3f}, with a caption one attribute off (colour, shape or position) "
            f"{card['one_off_caption_score']:.3f}; the own caption scores highest of the four in "
            f"{card['own_caption_ranked_first']:.3f} of scenes (chance 0.25).",
            f"- Trained in {card['train_s']:.0f} s on {cpu_model()} ({os.cpu_count()} cores), 2 torch "
            "threads.",
            "",
            "Reproduce: `eat models train-scorer` (writes here).",
        ]
    elif kind == "vae":
        recipe = card["recipe"]
        judged = ", ".join(
            f"{name} {card['judge_round_trip'][name]:.3f} ({card['judge_original'][name]:.3f})"
            for name in card["judge_round_trip"]
        )
        lines += [
            "The tiny world's autoencoder: a diffusers `AutoencoderKL` (two blocks of 32 and 64 channels, "
            "no mid-block attention) from 32 px images to 16x16x4 latents, saved with `save_pretrained`.",
            "",
            f"- Recipe (`tinyworld.vae.VaeRecipe`): L1 reconstruction plus {recipe['kl_weight']:g} x KL on "
            f"{recipe['train_images']} scenes of the `train` split; {recipe['steps']} steps of batch "
            f"{recipe['batch']}, AdamW (lr {recipe['lr']}), {recipe['warmup']} warm-up steps then cosine, "
            f"seed {recipe['seed']}; {card['parameters']:,} parameters, stored in half precision.",
            f"- Loss {card['first_loss']:.3f} at the first step, {card['last_loss']:.4f} over the last 100.",
            f"- On {recipe['eval_images']} validation scenes: PSNR {card['psnr_db']:.1f} dB; the judge reads "
            f"the round-tripped images right (originals in brackets): {judged}.",
            f"- Trained in {card['train_s']:.0f} s on {cpu_model()} ({os.cpu_count()} cores), 2 torch "
            "threads.",
            "",
            "Reproduce: `eat models train-vae` (writes here).",
        ]
    elif kind == "text-to-image":
        lines += text_to_image_card(card)
    elif kind == "style judge":
        recipe = card["recipe"]
        lines += [
            "Reads which style a 32 px tiny-world image is drawn in (plain, outline, striped, pastel, "
            "shadow): the personal models' fidelity measure. The judge's network with one head, trained "
            "on rendered images of the `judge` split, scene i in style i mod 5, as the text-to-image "
            "pipeline's VAE encodes and decodes them: generated images always pass through it, and it "
            "keeps a palette but blurs stripes, outlines and shadows, so that is what the judge must read.",
            "",
            f"- Recipe (`tinyworld.personal.StyleJudgeRecipe`): {recipe['train_images']} images, "
            f"{recipe['steps']} steps of batch {recipe['batch']}, AdamW (lr {recipe['lr']}), seed "
            f"{recipe['seed']}; {card['parameters']:,} parameters, stored in half precision.",
            f"- Accuracy on {recipe['eval_images']} decoded validation renders: "
            f"{card['validation_accuracy']:.3f} (chance 0.2); per style "
            + ", ".join(f"{k} {v:.2f}" for k, v in card["validation_per_style"].items())
            + ".",
            f"- Trained in {card['train_s']:.0f} s on {cpu_model()} ({os.cpu_count()} cores), 2 torch "
            "threads.",
            "",
            "Reproduce: `eat models train-style-judge` (writes here).",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def text_to_image_card(card: dict[str, Any]) -> list[str]:
    vae, text, unet = card["vae"], card["text_encoder"], card["unet"]
    t, u = text["recipe"], unet["recipe"]
    judged = ", ".join(f"{name} {value:.3f}" for name, value in unet["judge"].items())
    command = "eat models train-tiny" + (f" --reuse-vae {vae['reused']}" if "reused" in vae else "")
    vae_line = (
        f"- Autoencoder: reused from `{vae['reused']}` (its own card has its recipe)."
        if "reused" in vae
        else f"- Autoencoder (`tinyworld.vae.VaeRecipe`): {vae['recipe']['steps']} steps, PSNR "
        f"{vae['psnr_db']:.1f} dB, {vae['train_s']:.0f} s."
    )
    return [
        "The tiny world's text-to-image model: a diffusers `StableDiffusionPipeline` directory "
        "(`save_pretrained`, safetensors, half precision) with SD 1.5's parts in miniature: "
        "`AutoencoderKL` (32 px to 16x16x4 latents), a CLIP text encoder and tokenizer (transformers "
        "`CLIPTextModel`, `CLIPTokenizer`), a `UNet2DConditionModel` with cross-attention, and SD 1.5's "
        "DDIM schedule. Executors load it from `EAT_MODELS_DIR/<model>/` as they load SD 1.5.",
        "",
        vae_line,
        f"- Text encoder (`tinyworld.text_encoder.TextEncoderRecipe`): the text half of a transformers "
        f"`CLIPModel` trained contrastively on {t['train_images']} scenes of the `train` split, "
        f"{t['steps']} steps of batch {t['batch']}, seed {t['seed']}; {text['parameters']:,} parameters; "
        f"a validation image's own caption ranks first of every validation caption in "
        f"{text['caption_retrieval_top1']:.3f} ({text['train_s']:.0f} s).",
        f"- UNet (`tinyworld.text_to_image.UnetRecipe`): noise prediction on the latents of "
        f"{u['train_images']} `train` scenes, text encoder frozen, caption dropped "
        f"{u['caption_dropout']:.0%} "
        f"of the time, min-SNR weights (gamma {u['snr_gamma']:g}), {u['steps']} steps of batch "
        f"{u['batch']}, AdamW (lr {u['lr']}), {u['warmup']} warm-up steps then cosine, bfloat16 autocast, "
        f"seed {u['seed']}; {unet['parameters']:,} parameters; loss {unet['first_loss']:.3f} at the "
        f"first step, {unet['last_loss']:.4f} over the last 100 ({unet['train_s']:.0f} s).",
        f"- The judge reads 200 validation prompts' images ({u['eval_steps']} DDIM steps, guidance 7.5) "
        f"as asked: {judged}.",
        f"- Trained on {cpu_model()} ({os.cpu_count()} cores), 2 torch threads.",
        "",
        f"Reproduce: `{command}` (writes here); measure: `eat bench quality`.",
    ]
