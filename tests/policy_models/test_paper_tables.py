"""Our transcription of the paper's Tables IX-XI equals the rows in the paper's text."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_models.paper_tables import QUALITY, RELOAD_RATE, RESPONSE_S

PAPER = Path(__file__).resolve().parents[3] / "shared" / "papers" / "eat-paper.txt"


def paper_rows() -> list[tuple[str, tuple[float, ...]]]:
    """Every '| Name | v1 | ... | v15 |' row of the paper's three result tables, in order."""
    rows = []
    for line in PAPER.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 16 and cells[0] in QUALITY:
            try:
                rows.append((cells[0], tuple(float(c) for c in cells[1:])))
            except ValueError:
                continue
    return rows


def test_tables_match_the_paper_text() -> None:
    rows = paper_rows()
    assert len(rows) == 3 * len(QUALITY), "the paper has one row per algorithm in each of the three tables"
    expected = [*QUALITY.items(), *RESPONSE_S.items(), *RELOAD_RATE.items()]
    assert rows == expected


@pytest.mark.parametrize("table", [QUALITY, RESPONSE_S, RELOAD_RATE])
def test_every_row_covers_the_fifteen_settings(table: dict[str, tuple[float, ...]]) -> None:
    assert all(len(values) == 15 for values in table.values())
