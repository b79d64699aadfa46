"""The `eat` command line, run in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from services.cli import main


def test_eval_writes_json_csv_plots_and_prints_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    json_path, csv_path, plots = tmp_path / "e.json", tmp_path / "e.csv", tmp_path / "plots"
    argv = ["eval", "--nodes", "4", "--rates", "0.05", "--policies", "random", "fifo", "--seeds", "2"]
    argv += ["--json", str(json_path), "--csv", str(csv_path), "--plots", str(plots)]
    assert main(argv) == 0

    out = capsys.readouterr().out
    assert "seeds 1000..1001" in out and "mode paper" in out and "profile reference" in out
    assert "| Policy | N=4 λ=0.05 |" in out and "| fifo |" in out

    records = json.loads(json_path.read_text())["rows"]
    assert [r["policy"] for r in records] == ["random", "fifo"]
    assert all(r["seeds"] == [1000, 1001] for r in records)

    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["policy"] for r in table] == ["random", "fifo"]
    assert {"response_ci95", "utility_ci95", "lower_bound_s"} <= set(table[0])

    pngs = sorted(plots.glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)


@pytest.mark.slow
def test_eval_shift_preset_reports_each_group_and_pooled_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    json_path = tmp_path / "shift.json"
    argv = ["eval", "--preset", "shift", "--policies", "reuse", "fifo", "shipped:eat", "--seeds", "2"]
    assert main([*argv, "--json", str(json_path)]) == 0
    captured = capsys.readouterr()
    for group in ("table-vi", "warm", "sizes", "rates"):
        assert f"## {group}:" in captured.out and f"**{group}**" in captured.out
    assert "| fifo | table-vi: − reuse" not in captured.out  # policies are rows, groups columns
    assert "shipped:eat N=6 λ=0.04: not served there, skipped" in captured.err
    document = json.loads(json_path.read_text())
    assert {r["profile"] for r in document["rows"]} == {"reference", "paper-table-vi"}
    assert {r["mode"] for r in document["rows"]} == {"paper", "warm"}
    pooled = [g for g in document["gaps"] if g["scope"] == "warm" and g["baseline"] == "reuse"]
    assert [g["policy"] for g in pooled] == ["fifo"]  # shipped:eat serves no warm setting
    assert pooled[0]["samples"] == 2 * 7


def test_eval_shift_preset_refuses_a_mode() -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--preset", "shift", "--mode", "warm", "--policies", "fifo", "--seeds", "2"])


def test_eval_rejects_an_unknown_policy() -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--nodes", "4", "--rates", "0.05", "--policies", "no-such-policy"])


def test_floor_prints_one_row_per_setting_and_rejects_an_unreachable_quality(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["floor", "--nodes", "4", "8", "--rates", "0.05", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "mean quality >= 0.26, seeds 1000-1002" in out
    rows = [line for line in out.splitlines() if line.startswith("| 4 |") or line.startswith("| 8 |")]
    assert len(rows) == 2
    assert (
        main(["floor", "--nodes", "4", "--rates", "0.05", "--seeds", "3", "--against", "reuse", "fifo"]) == 0
    )
    least = float(capsys.readouterr().out.split("least ")[1].split()[0])
    assert least >= 1.0
    with pytest.raises(SystemExit):
        main(["floor", "--nodes", "4", "--rates", "0.05", "--quality", "0.5"])


def test_bench_sim_writes_the_report_shape(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bench.json"
    argv = ["bench", "sim", "--quick", "--nodes", "4", "--batches", "1", "8", "--seconds", "0.2"]
    assert main([*argv, "--json", str(path)]) == 0
    assert "decisions/s" in capsys.readouterr().out

    report = json.loads(path.read_text())
    assert {"cpu_model", "cores", "python", "numpy", "platform"} <= set(report["machine"])
    results = report["results"]
    assert [(r["kind"], r["batch"]) for r in results] == [("single", 1), ("batched", 1), ("batched", 8)]
    for r in results:
        assert set(r) == {"nodes", "batch", "decisions_per_s", "kind", "us_per_decision", "speedup_vs_single"}
        assert r["nodes"] == 4 and r["decisions_per_s"] > 0
        assert r["us_per_decision"] == pytest.approx(1e6 / r["decisions_per_s"])
    assert results[0]["speedup_vs_single"] == 1.0


def test_status_prints_names_from_the_wire_without_their_control_characters(
    capsys: pytest.CaptureFixture,
) -> None:
    from policy_models.live import ServerInfo, Snapshot, TaskInfo
    from services.stack_cli import print_status, printable

    clear = "\x1b[2J\x1b[H"
    snapshot = Snapshot(
        now_s=0.0,
        servers=(ServerInfo(f"edge{clear}0", True, 0.0, (f"sd\x9b{clear}",), 1.0),),
        queue=(TaskInfo("t\u202e1", 1.0, 1, "sd-a"),),
        total_queued=1,
    )
    print_status(snapshot, {f"queued{clear}": 1})
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out
    assert "edge\\x1b[2J\\x1b[H0" in out and "t\\u202e1" in out
    assert printable("failed:\nmessage: \x07", keep_newlines=True) == "failed:\nmessage: \\x07"
