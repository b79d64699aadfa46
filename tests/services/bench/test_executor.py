"""`eat bench executor` on the tiny model, quickly: the report's shape and its exactness figures (sync
patch parallelism equals one process; displaced mode stays close to sync). Speeds are never asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from services.bench.executor import REGROUP_TARGET_RATIO
from services.cli import main

SYNC_MAX_ABS_DIFF = 1e-4  # fp32: float rounding only
DISPLACED_MIN_PSNR_DB = 30.0


@pytest.mark.slow
def test_the_executor_bench_reports_speeds_and_exactness(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    argv = ["bench", "executor", "--steps", "5", "--warmup-steps", "2", "--work-dir", str(tmp_path / "work")]
    assert main([*argv, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())

    assert report["device"] == "cpu" and report["backend"] == "gloo"
    assert report["model"] == "tiny" and report["resolution"] == 64
    assert set(report["step_s"]) == {"1", "2", "4"}
    assert all(seconds > 0 for seconds in report["step_s"].values())
    assert report["cold_load_s"] > 0 and report["regroup_s"] > 0
    assert math.isclose(report["regroup_vs_load_ratio"], report["regroup_s"] / report["cold_load_s"])
    assert report["regroup_target_ratio"] == REGROUP_TARGET_RATIO
    assert set(report["seeds"]) == {"model", "noise"} and report["machine"]["cores"] >= 1

    assert set(report["sync_max_abs_diff_by_gang"]) == {"2", "4"}
    assert 0 <= report["sync_max_abs_diff"] <= SYNC_MAX_ABS_DIFF
    assert set(report["displaced_psnr_db_by_gang"]) == {"2", "4"}
    assert report["displaced_psnr_db"] >= DISPLACED_MIN_PSNR_DB
