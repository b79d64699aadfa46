"""`eat demo`'s core on the real stack (RabbitMQ, gRPC, diffusers executors on the tiny world's trained
pipeline, the evaluator's CLIP on its trained scorer), in a fresh vhost: every task ends with a real
image that the judge reads, and the report files say so."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from services.demo import RESOLUTION, DemoSettings, run_demo

pytestmark = pytest.mark.slow
TASKS = 4
EXECUTORS = 2


class _Sources(HTMLParser):
    """Every src and href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links |= {value for name, value in attrs if name in ("src", "href") and value}


def test_the_demo_runs_real_tasks_and_writes_a_report_with_every_image(amqp_url: str, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    settings = DemoSettings(out, amqp_url, tasks=TASKS, executors=EXECUTORS, step_sweep=(8, 3))
    lines: list[str] = []
    report = run_demo(settings, say=lines.append)

    assert report.lost == 0 and report.count("completed") == TASKS, report.rows
    assert set(report.stop_codes.values()) == {0}
    assert {row.patches for row in report.rows} == {1, 2}  # the mix, capped at two executors

    data = json.loads((out / "report.json").read_text())
    assert data["summary"] == data["summary"] | {"tasks": TASKS, "completed": TASKS, "lost": 0}
    rows = data["rows"]
    assert len(rows) == TASKS and len({row["task_id"] for row in rows}) == TASKS
    for row in rows:
        assert row["simulated"] is False  # a real diffusers run scored by the real evaluator
        assert len(row["gang"]) == row["patches"] and row["steps"] == (8, 3)[rows.index(row) % 2]
        assert row["response_s"] > 0 and isinstance(row["clip_score"], float)
        assert set(row["judge"]) == {"colour", "shape", "position"} and row["judge_read"]
        with Image.open(out / row["image"]) as image:
            assert image.size == (RESOLUTION, RESOLUTION)

    page = _Sources()
    page.feed((out / "report.html").read_text())
    assert {row["image"] for row in rows} <= page.links
    assert set(data["plots"]) <= page.links and len(data["plots"]) == 3
    assert all((out / link).is_file() for link in page.links)
    assert "judge:" in (out / "report.html").read_text()
    assert any("stopped:" in line for line in lines)
