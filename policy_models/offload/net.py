"""The candidate scorer: one small network applied to every candidate, softmax over the valid ones.

logit = delta_gain * delta + MLP(features). The first term alone is the social greedy rule (place
where the exact total utility grows most), so training starts from a sound policy and the MLP learns
what the myopic increase misses: keeping room in a batch for users still to come, not queueing a
server that later users need, giving up a little now for a split that suits the batch it will be.

Weights are stored as safetensors plus a JSON config; nothing is ever unpickled. Deciding uses a NumPy
forward of the same weights (no torch on the decision path).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policy_models.offload.env import FEATURES, N_FEATURES

DELTA_FEATURE = FEATURES.index("delta")
WEIGHTS_DIR = Path(__file__).with_name("weights")


@dataclass(frozen=True)
class ScorerConfig:
    """Constructor arguments of `Scorer`."""

    mode: str  # "convex" or "chosen" (see env.SplitMode)
    n_features: int = N_FEATURES
    hidden: int = 64
    delta_gain: float = 30.0  # initial weight of the exact utility increase in the logit


class Scorer(nn.Module):
    """Per-candidate logits (B, C) from candidate features (B, C, F); invalid candidates get -inf."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(
            nn.Linear(config.n_features, config.hidden),
            nn.Tanh(),
            nn.Linear(config.hidden, config.hidden),
            nn.Tanh(),
            nn.Linear(config.hidden, 1),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.delta_gain = nn.Parameter(torch.tensor(float(config.delta_gain)))

    def forward(self, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        logits = self.delta_gain * features[..., DELTA_FEATURE] + self.mlp(features)[..., 0]
        return logits.masked_fill(~valid, -torch.inf)


class NumpyScorer:
    """The same forward pass in NumPy float32, for deciding."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.w = [tensors[f"mlp.{i}.weight"].T.copy() for i in (0, 2, 4)]
        self.b = [tensors[f"mlp.{i}.bias"] for i in (0, 2, 4)]
        self.delta_gain = np.float32(tensors["delta_gain"])

    def __call__(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        h = np.tanh(features @ self.w[0] + self.b[0])
        h = np.tanh(h @ self.w[1] + self.b[1])
        logits = self.delta_gain * features[..., DELTA_FEATURE] + (h @ self.w[2] + self.b[2])[..., 0]
        return np.where(valid, logits, -np.inf)


def save_scorer(scorer: Scorer, stem: Path, meta: dict[str, Any]) -> None:
    """Write `stem`.safetensors (weights) and `stem`.json (config + `meta`)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in scorer.state_dict().items()}
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    payload = {"config": asdict(scorer.config), **meta}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_config(stem: Path) -> tuple[ScorerConfig, dict[str, Any]]:
    payload = json.loads(stem.with_suffix(".json").read_text())
    return ScorerConfig(**payload.pop("config")), payload


def load_scorer(stem: Path) -> Scorer:
    """A torch `Scorer` with saved weights."""
    config, _ = load_config(stem)
    scorer = Scorer(config)
    scorer.load_state_dict(load_file(str(stem.with_suffix(".safetensors"))))
    return scorer


def load_numpy_scorer(stem: Path) -> tuple[NumpyScorer, ScorerConfig]:
    """The NumPy forward of saved weights, and their config."""
    config, _ = load_config(stem)
    tensors = {k: v.numpy() for k, v in load_file(str(stem.with_suffix(".safetensors"))).items()}
    return NumpyScorer(tensors), config
