"""The trained policies shipped with the code, in policy_models/checkpoints/<name>/.

Each holds a checkpoint (safetensors + config.json), the run's metrics.csv and a card (card.json +
CARD.md, written by `eat ship`). The card names the docs/results.md row the policy fills, the cluster
sizes it was trained on and its mode, so a row can be served by several checkpoints: the per-size EAT
policies for N = 4, 8 and 12 all fill the "eat" row. `make_policy("shipped:eat", cfg)` picks the one
for cfg's size and mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy_models.config import SimConfig

SHIPPED_ROOT = Path(__file__).resolve().parent / "checkpoints"
CARD_JSON, CARD_MD, METRICS_CSV = "card.json", "CARD.md", "metrics.csv"


@dataclass(frozen=True)
class ShippedPolicy:
    directory: Path
    row: str  # the docs/results.md row it fills
    sizes: tuple[int, ...]  # node counts it was trained on (and is evaluated on)
    card: dict[str, Any]

    @property
    def policy_name(self) -> str:
        return f"checkpoint:{self.directory}"

    @property
    def mode(self) -> str:
        return self.card.get("mode", "paper")

    def serves(self, cfg: SimConfig) -> bool:
        return cfg.n_servers in self.sizes and self.mode == cfg.mode


def shipped_policies(root: Path = SHIPPED_ROOT) -> list[ShippedPolicy]:
    if not root.is_dir():
        return []
    found = []
    for card_path in sorted(root.glob(f"*/{CARD_JSON}")):
        card = json.loads(card_path.read_text())
        found.append(ShippedPolicy(card_path.parent, card["row"], tuple(card["sizes"]), card))
    return found


def shipped_for(row: str, cfg: SimConfig, root: Path = SHIPPED_ROOT) -> ShippedPolicy:
    """The shipped policy of `row` trained for cfg's cluster size and mode."""
    rows = [p for p in shipped_policies(root) if p.row == row]
    matching = [p for p in rows if p.serves(cfg)]
    if not matching:
        have = ", ".join(
            f"{p.card.get('name', p.directory.name)} (N={list(p.sizes)}, {p.mode})" for p in rows
        )
        raise ValueError(
            f"no shipped {row!r} policy for N={cfg.n_servers} in {cfg.mode} mode under {root}"
            f"{'; shipped: ' + have if have else ''}"
        )
    return matching[0]
