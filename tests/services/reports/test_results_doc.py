"""docs/results.md is what `eat eval` gives with the shipped checkpoints: a few of its cells, recomputed.

A change to the simulator, a heuristic or a shipped policy that moves these figures fails here until
`eat results` is run again, so the document never goes stale silently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from policy_models.config import paper_configs
from policy_models.evaluation import evaluate_policy
from services.reports.results import METRICS, format_cell

torch.set_num_threads(1)

DOC = Path(__file__).resolve().parents[3] / "docs" / "results.md"
CHECKED = {"reuse": "reuse", "eat": "shipped:eat", "eat-cross": "shipped:eat-cross"}
SETTINGS = (2, 8, 14)  # N=4 λ=0.05, N=8 λ=0.1, N=12 λ=0.19 among the paper's 15


def doc_cells(text: str, title: str, row: str) -> list[str]:
    """The cells of one row of the top-level table under `## {title}`."""
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    line = next(line for line in section.splitlines() if line.startswith(f"| {row} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("row", sorted(CHECKED))
def test_results_doc_matches_a_fresh_evaluation(row: str) -> None:
    text = DOC.read_text()
    first, last = map(int, re.search(r"Evaluation seeds (\d+)\.\.(\d+)", text).groups())
    seeds = tuple(range(first, last + 1))
    configs = paper_configs()
    for index in SETTINGS:
        fresh = evaluate_policy(CHECKED[row], configs[index], seeds)
        for metric, title, fmt in METRICS:
            expected = format_cell(fresh.metric(metric), fmt)
            assert doc_cells(text, title, row)[index] == expected, (metric, index)
