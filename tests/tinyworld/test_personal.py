"""Personal models: styles change how scenes are drawn, the style judge reads them, and a user's LoRA
adapter is trained, saved, hot-swapped and unloaded on a resident base pipeline without reloading it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyworld.judge import Judge
from tinyworld.personal import (
    ADAPTER_FILE,
    STYLE_ATTRIBUTES,
    AdapterBank,
    PersonalRecipe,
    decoded,
    save_adapter,
    style_share,
    styled_scenes,
    train_adapter,
)
from tinyworld.scenes import STYLES, render_batch, split_scenes
from tinyworld.text_to_image import generate, load_pipeline
from tinyworld.weights import JUDGE_DIR, PIPELINE_DIR, STYLE_JUDGE_DIR

torch.set_num_threads(1)


def test_styles_change_the_pixels_but_not_what_the_judge_reads() -> None:
    pairs = split_scenes("validation", 60)
    plain = render_batch(pairs)
    judge = Judge.load(JUDGE_DIR)
    for style in STYLES[1:]:
        styled = render_batch(pairs, style=style)
        assert np.abs(styled.astype(int) - plain).mean() > 1.0, style
        # Colour and position survive every style (the outline keeps the colour on the edge).
        agreement = judge.agreement(styled, [scene for scene, _ in pairs])
        assert agreement["position"] >= 0.8, (style, agreement)
    with pytest.raises(ValueError, match="unknown style"):
        render_batch(pairs[:1], style="sepia")


@pytest.mark.slow
def test_the_shipped_style_judge_reads_styles_through_the_vae() -> None:
    images, styles = styled_scenes("test", 500)
    images = decoded(load_pipeline(PIPELINE_DIR).vae, images)  # what generated images look like
    style_judge = Judge.load(STYLE_JUDGE_DIR, STYLE_ATTRIBUTES)
    shares = {}
    for style in STYLES:
        chosen = np.array([s == style for s in styles])
        shares[style] = style_share(style_judge, images[chosen], style)
    # A palette survives the VAE whole, stripes mostly; a thin outline or a soft shadow only in part
    # (the card states each style's figure). Chance is 0.2.
    assert shares["pastel"] >= 0.9 and shares["striped"] >= 0.8, shares
    assert min(shares.values()) >= 0.4 and np.mean(list(shares.values())) >= 0.65, shares


@pytest.mark.slow
def test_an_adapter_trains_saves_and_hot_swaps_without_reloading_the_base(tmp_path: Path) -> None:
    pipeline = load_pipeline(PIPELINE_DIR)
    base_weight = pipeline.unet.conv_in.weight.detach().clone()
    card = train_adapter(pipeline, "ana", "outline", PersonalRecipe(examples=16, steps=24, batch=8, warmup=2))
    # LoRA starts as the identity (its up-projections at zero); training moves it away.
    assert card["adapter_parameters"] > 0 and np.isfinite(card["last_loss"])
    save_adapter(pipeline, "ana", card, tmp_path / "ana")
    assert (tmp_path / "ana" / ADAPTER_FILE).is_file()

    fresh = load_pipeline(PIPELINE_DIR)
    unet = fresh.unet
    bank = AdapterBank(fresh)
    bank.load("ana", tmp_path / "ana")
    prompts, seeds = ["a large red circle in the center, gray background"], [7]
    bank.use(None)
    base = generate(fresh, prompts, 4, seeds)
    bank.use("ana")
    personal = generate(fresh, prompts, 4, seeds)
    assert np.abs(personal.astype(int) - base).max() > 0  # the adapter changes the image
    bank.unload("ana")
    assert fresh.unet is unet and torch.equal(unet.conv_in.weight, base_weight)  # never reloaded
    assert np.array_equal(generate(fresh, prompts, 4, seeds), base)
    with pytest.raises(KeyError):
        bank.use("ana")


@pytest.mark.slow
def test_make_personal_writes_an_adapter_with_its_measured_card(tmp_path: Path) -> None:
    import json

    from services.cli import main

    out = tmp_path / "bo"
    argv = ["models", "make-personal", "--user", "bo", "--style", "pastel", "--out", str(out)]
    argv += ["--steps", "12", "--eval-prompts", "4"]
    assert main(argv) == 0
    card = json.loads((out / "adapter.json").read_text())
    assert card["user"] == "bo" and card["style"] == "pastel" and card["recipe"]["steps"] == 12
    assert card["eval_prompts"] == 4
    assert 0.0 <= card["style_share_base"] <= 1.0 and 0.0 <= card["style_share_personal"] <= 1.0
    assert (out / ADAPTER_FILE).is_file()
    with pytest.raises(SystemExit):
        main(["models", "make-personal", "--user", "bo", "--style", "sepia", "--out", str(out)])


@pytest.mark.slow
def test_shipped_users_adapters_give_the_fidelity_their_cards_state() -> None:
    import json

    from tinyworld.personal import CARD_FILE, personal_report
    from tinyworld.weights import USER_STYLES, USERS_DIR

    style_judge = Judge.load(STYLE_JUDGE_DIR, STYLE_ATTRIBUTES)
    pipeline = load_pipeline(PIPELINE_DIR)
    bank = AdapterBank(pipeline)
    for user, style in USER_STYLES.items():
        card = json.loads((USERS_DIR / user / CARD_FILE).read_text())
        assert (card["user"], card["style"]) == (user, style)
        assert card["train_s"] <= 180  # trained on this machine's CPU in minutes
    bank.load("cai", USERS_DIR / "cai")
    card = json.loads((USERS_DIR / "cai" / CARD_FILE).read_text())
    report = personal_report(pipeline, "cai", "pastel", style_judge, card["eval_prompts"], card["eval_steps"])
    assert report["style_share_personal"] == pytest.approx(card["style_share_personal"], abs=0.03)
    assert report["style_share_base"] == pytest.approx(card["style_share_base"], abs=0.03)
    assert report["style_share_personal"] >= report["style_share_base"] + 0.15  # the adapter draws pastel
