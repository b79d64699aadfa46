"""The demo's pure parts: the fixed workload, image copying from the result store, and the report files
for runs where some tasks failed or were lost (no broker needed)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from services.demo import (
    JUDGED,
    DemoReport,
    DemoRow,
    DemoSettings,
    copy_image,
    demo_submissions,
    format_table,
    summary_line,
    write_report,
)
from tinyworld.scenes import parse_caption


def test_sixteen_tasks_mix_gang_sizes_with_fixed_seeds_and_pinned_steps() -> None:
    submissions = demo_submissions(DemoSettings(tasks=16, executors=4, step_sweep=(3, 7)), "tag")
    assert Counter(s.patches for s in submissions) == {1: 6, 2: 6, 4: 4}
    assert [s.seed for s in submissions] == list(range(16))
    assert [(s.qos.min_steps, s.qos.max_steps) for s in submissions[:3]] == [(3, 3), (7, 7), (3, 3)]
    assert all(s.model == "tinyworld" for s in submissions)
    assert len({s.task_id for s in submissions}) == 16
    assert len({parse_caption(s.prompt) for s in submissions}) > 1  # tiny-world scenes, not one prompt


def test_gangs_are_capped_at_the_cluster_size() -> None:
    submissions = demo_submissions(DemoSettings(tasks=8, executors=2), "tag")
    assert {s.patches for s in submissions} == {1, 2}


def test_only_images_inside_the_result_store_are_copied(tmp_path: Path) -> None:
    store, images = tmp_path / "results", tmp_path / "out" / "images"
    (store / "t1").mkdir(parents=True)
    (store / "t1" / "1.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"no")

    assert copy_image(f"file://{store}/t1/1.png", store, images, "t1") == "images/t1.png"
    assert (images / "t1.png").read_bytes() == b"png"
    assert copy_image(f"file://{tmp_path}/secret.png", store, images, "t2") == ""
    assert copy_image(f"file://{store}/t1/../../secret.png", store, images, "t3") == ""


def _rows() -> list[DemoRow]:
    done = DemoRow("d-00", "a fox", 2, 0, "completed", ["edge-0", "edge-1"], 5, True, 2.0, 0.5, 0.0, 1.5)
    done = replace(done, clip_score=0.1, simulated=False, image="images/d-00.png")
    verdict = {"colour": True, "shape": False, "position": True}
    done = replace(done, judge=verdict, judge_read="red cross, left")
    failed = DemoRow("d-01", "a cat", 1, 1, "failed", message="gang member lost")
    lost = DemoRow("d-02", "a map", 4, 2, "lost", message="no terminal event in time")
    return [done, failed, lost]


def test_failed_and_lost_tasks_show_in_the_table_summary_and_files(tmp_path: Path) -> None:
    report = DemoReport(_rows(), wall_s=3.0, settings={"tasks": 3})
    table = format_table(report.rows)
    assert "edge-0,edge-1" in table and "reused" in table and "gang member lost" in table
    assert summary_line(report).startswith("1 completed, 1 failed, 1 lost of 3")
    assert "judge: 0/1 images show their prompt (colour 1, shape 0, position 1)" in summary_line(report)
    assert " shape " in table  # the attribute the judge read otherwise

    write_report(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [row["outcome"] for row in data["rows"]] == ["completed", "failed", "lost"]
    assert data["summary"]["mean_response_s_by_patches"] == {"2": 2.0}
    html = (tmp_path / "report.html").read_text()
    assert 'src="images/d-00.png"' in html and html.count('class="thumb"') == 1
    assert "read red cross, left" in html
    assert data["rows"][0]["judge"] == {name: name != "shape" for name in JUDGED}
    assert all((tmp_path / plot).is_file() for plot in data["plots"])
