"""The training loop the tiny world's models share: random minibatches, AdamW, a linear warm-up then a
cosine decay to 0, and the figures a model card states."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm


def warmup_cosine(step: int, warmup: int, steps: int) -> float:
    """The learning-rate factor at `step`: linear up to 1 over `warmup` steps, then cosine down to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def fit(
    module: torch.nn.Module,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    n_items: int,
    recipe: Any,
    weight_decay: float,
    progress: Callable[[str], None] | None = None,
    report_every: int = 200,
    every: tuple[int, Callable[[int], None]] | None = None,
) -> list[float]:
    """`recipe.steps` steps on minibatches of `recipe.batch` item indices drawn with replacement (from a
    generator seeded with `recipe.seed`); `loss_of(indices)` gives each batch's loss. Returns the
    per-step losses; the module is left in eval mode. `every=(n, call)` calls `call(step)` after every
    n-th step (in eval mode; training resumes after it)."""
    trainable = [p for p in module.parameters() if p.requires_grad]  # e.g. only an adapter's
    optimiser = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: warmup_cosine(step, recipe.warmup, recipe.steps)
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    losses: list[float] = []
    module.train()
    bar = tqdm(range(recipe.steps), disable=progress is None, mininterval=2.0, leave=False, unit="step")
    for step in bar:
        loss = loss_of(torch.randint(n_items, (recipe.batch,), generator=generator))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        if progress is not None and (step + 1) % report_every == 0:
            progress(f"step {step + 1}/{recipe.steps}: loss {np.mean(losses[-100:]):.4f}")
        if every is not None and (step + 1) % every[0] == 0:
            module.eval()
            every[1](step + 1)
            module.train()
    module.eval()
    return losses


def card_basics(recipe: Any, module: torch.nn.Module, losses: list[float], started: float) -> dict[str, Any]:
    """What every card states: the recipe, the loss at the start and at the end, size and time."""
    return {
        "recipe": asdict(recipe),
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-100:])),
        "parameters": sum(p.numel() for p in module.parameters()),
        "train_s": time.perf_counter() - started,
    }


def clip_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy on unit embeddings; pairs that share a caption count as matches."""
    logits = scale * image_emb @ text_emb.T
    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1).float()
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T)) / 2
