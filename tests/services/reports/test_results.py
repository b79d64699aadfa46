"""Shipping a trained run with its card, and docs/results.md built from measurements."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from policy_models.config import paper_config, warm_config
from policy_models.evaluation import evaluate_policy
from policy_models.learning.agents import AgentConfig
from policy_models.learning.train import TrainSettings, train
from policy_models.suites import SettingGroup, Suite, hard_suite
from services.cli import main
from services.reports.results import (
    card_paragraph,
    floor_section,
    gap_section,
    make_card,
    shipped_policies,
    suite_section,
    write_results,
)

torch.set_num_threads(1)

TINY = AgentConfig(
    algorithm="eat-d", hidden=32, score_hidden=16, d_model=16, attention_ff=32, batch_size=32,
    updates_per_step=0.25, buffer_capacity=2048,
)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    settings = TrainSettings(
        sim=paper_config(4, 0.05), agent=TINY, total_steps=96, n_envs=8, seed=2, out_dir=out,
        warmup_steps=32, eval_every=48, eval_seeds=(500, 501), checkpoint_every=0, log_every=32,
        progress=False,
    )  # fmt: skip
    train(settings)
    return out


def test_ship_copies_the_best_checkpoint_and_writes_a_card(run_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    argv = ["ship", str(run_dir), "--name", "eat-d-n4", "--row", "eat-d", "--note", "A smoke run."]
    assert main([*argv, "--root", str(root)]) == 0
    target = root / "eat-d-n4"
    card = json.loads((target / "card.json").read_text())
    assert card["algorithm"] == "eat-d" and card["sizes"] == [4] and card["env_steps"] == 96
    assert card["wall_s"] > 0 and (target / "model.safetensors").is_file()
    assert (
        "eat-d-n4" in (target / "CARD.md").read_text() and "A smoke run." in (target / "CARD.md").read_text()
    )
    assert [p.row for p in shipped_policies(root)] == ["eat-d"]


def test_a_card_says_when_the_network_reads_a_hint(run_dir: Path) -> None:
    config = json.loads((run_dir / "best" / "config.json").read_text())
    card = make_card(config, {}) | {"name": "plain", "row": "eat-d", "note": ""}
    assert card["hint"] is None and card["residual"] is False
    assert "heuristic's action" not in card_paragraph(card)
    config["agent"] |= {"hint": "reuse", "residual": True}
    hinted = make_card(config, {}) | {"name": "hinted", "row": "eat", "note": ""}
    text = card_paragraph(hinted)
    assert "reads the reuse heuristic's action on each state" in text and "correction" in text


def test_the_gap_section_sets_eat_against_the_heuristic_seed_by_seed() -> None:
    configs = [paper_config(4, 0.05), paper_config(4, 0.07)]
    seeds = (1000, 1001, 1002, 1003, 1004)
    rows = [evaluate_policy(name, cfg, seeds) for cfg in configs for name in ("reuse", "random")]
    # random stands in for an EAT row that is worse everywhere, reuse itself for one tied everywhere.
    as_eat = [replace(r, policy="eat") for r in rows if r.policy == "random"]
    as_cross = [replace(r, policy="eat-cross") for r in rows if r.policy == "reuse"]
    lines = gap_section([*rows, *as_eat, *as_cross], configs)
    eat = next(line for line in lines if line.startswith("| eat |"))
    cross = next(line for line in lines if line.startswith("| eat-cross |"))
    assert eat.count("▼") == 2 and eat.endswith("| 0 / 0 / 2 |")
    assert cross.count("= +0.00") == 2 and cross.endswith("| 0 / 2 / 0 |")
    best = next(line for line in lines if line.startswith("| best mean utility"))
    assert best.endswith("| reuse 2 |")  # random (as eat) is worse; the copy of reuse ties, first wins
    assert gap_section(rows, configs) == []  # no EAT row, no section


@pytest.mark.slow
def test_the_floor_section_names_the_settings_where_the_paper_share_is_out_of_reach() -> None:
    seeds = tuple(range(1000, 1010))
    lines = floor_section([], seeds)
    floor = next(line for line in lines if line.startswith("| floor, mean quality"))
    share = next(line for line in lines if line.startswith("| 0.7 × paper EAT"))
    cells = lambda line: line.strip("|").split("|")[1:]  # noqa: E731
    floors = [float(cell.split("±")[0]) for cell in cells(floor)]
    shares = [float(cell) for cell in cells(share)]
    assert len(floors) == len(shares) == 15
    verdict = next(line for line in lines if "lies below the floor at" in line)
    below = [i for i, (f, s) in enumerate(zip(floors, shares, strict=True)) if s < f]
    assert verdict.count("N=") == len(below) >= 1
    assert "N=4 λ=0.03" in verdict  # 0.7 × 21.4 s = 15.0 s, under every schedule's floor there


def test_results_document_puts_ours_beside_the_paper(run_dir: Path, tmp_path: Path) -> None:
    from services.reports.results import ship

    root = tmp_path / "checkpoints"
    ship(run_dir, "eat-d-n4", "eat-d", root=root)
    out = tmp_path / "docs" / "results.md"
    write_results(
        out,
        seeds=(1000, 1001),
        root=root,
        heuristics=("fifo",),
        configs=[paper_config(4, 0.05)],
        suites=False,
    )
    text = out.read_text()
    assert "| fifo |" in text and "| eat-d |" in text and "| *paper EAT-D* |" in text
    assert "| *paper EAT-D* | 0.255 | 0.255 | 0.249" in text  # Table IX, N=4
    assert "![training curves](img/training_curves.png)" in text
    assert (out.parent / "img" / "training_curves.png").is_file()
    latency_rows = [line for line in text.splitlines() if line.startswith("| eat-d-n4 |")]
    assert latency_rows and float(latency_rows[-1].split("|")[2]) > 0


@pytest.mark.slow
def test_a_warm_policy_gets_its_own_section_and_stays_out_of_the_paper_tables(tmp_path: Path) -> None:
    from services.reports.results import ship

    run = tmp_path / "warm-run"
    settings = TrainSettings(
        sim=warm_config(4, 0.2), agent=TINY, total_steps=64, n_envs=8, seed=2, out_dir=run,
        warmup_steps=32, eval_every=0, eval_seeds=(500,), checkpoint_every=0, log_every=32, progress=False,
    )  # fmt: skip
    train(settings)
    root = tmp_path / "checkpoints"
    ship(run, "eat-d-warm", "eat-d-warm", root=root)
    out = tmp_path / "results.md"
    write_results(
        out,
        seeds=(1000, 1001),
        root=root,
        heuristics=("fifo",),
        configs=[paper_config(4, 0.05)],
        suites=False,
    )
    paper_part, warm_part = out.read_text().split("## Warm mode")
    assert "| eat-d-warm |" not in paper_part.split("## Shipped policies")[0]
    assert "| fifo |" in warm_part and "| eat-d-warm |" in warm_part and "*paper" not in warm_part
    # The warm section covers the paper's five rates at the warm policy's size (N=4).
    assert "N=4 λ=0.01" in warm_part and "N=4 λ=0.09" in warm_part and "N=8" not in warm_part


def test_shipped_names_pick_the_checkpoint_for_the_clusters_size(run_dir: Path, tmp_path: Path) -> None:
    from policy_models.policies import make_policy
    from policy_models.shipped import shipped_for
    from services.reports.results import ship

    root = tmp_path / "checkpoints"
    ship(run_dir, "eat-d-n4", "eat-d", root=root)
    assert shipped_for("eat-d", paper_config(4, 0.01), root).directory == root / "eat-d-n4"
    with pytest.raises(ValueError, match="no shipped 'eat-d' policy for N=8"):
        shipped_for("eat-d", paper_config(8, 0.1), root)
    with pytest.raises(ValueError, match="warm mode"):
        shipped_for("eat-d", warm_config(4, 0.1), root)
    # Through the policy registry, against the checkpoints shipped with the code.
    with pytest.raises(ValueError, match="no shipped 'no-such-row' policy"):
        make_policy("shipped:no-such-row", paper_config(4, 0.05))


def test_executor_reports_in_docs_bench_become_a_table(tmp_path: Path) -> None:
    from services.reports.results import executor_section

    report = {
        "device": "cpu", "model": "tiny", "resolution": 64, "step_s": {"1": 0.0133, "2": 0.0819, "4": 0.295},
        "cold_load_s": 0.602, "regroup_s": 0.0114, "sync_max_abs_diff": 5.5e-5, "displaced_psnr_db": 53.3,
    }  # fmt: skip
    (tmp_path / "executor-cpu.json").write_text(json.dumps(report))
    lines = executor_section(tmp_path)
    row = next(line for line in lines if line.startswith("| cpu |"))
    assert "| 64 | 0.0133 | 0.0819 | 0.2950 | 0.602 | 0.0114 | 0.019 | 5.5e-05 | 53.3 |" in row
    assert any("No GPU figures yet" in line for line in lines)
    report["device"] = "cuda:0"
    (tmp_path / "executor-cuda-512.json").write_text(json.dumps(report))
    assert not any("No GPU figures yet" in line for line in executor_section(tmp_path))


def test_lookahead_reports_in_docs_bench_become_a_gap_row(tmp_path: Path) -> None:
    from services.reports.results import lookahead_section

    assert lookahead_section(tmp_path) == []
    rows = [
        {"nodes": 4, "rate": 0.01, "seeds": [1000, 1001, 1002], "teacher_utility": [9.5, 9.6, 9.7],
         "base_utility": [9.4, 9.5, 9.6]},
        {"nodes": 4, "rate": 0.03, "seeds": [1000, 1001, 1002], "teacher_utility": [9.0, 9.3, 9.1],
         "base_utility": [9.1, 9.1, 9.2]},
    ]  # fmt: skip
    report = {"base": "reuse", "rollout": {"samples": 16, "z": 2.0}, "rows": rows}
    (tmp_path / "lookahead-paper.json").write_text(json.dumps(report))
    lines = lookahead_section(tmp_path)
    assert lines[0].startswith("## Headroom: a lookahead over the reuse heuristic")
    row = next(line for line in lines if line.startswith("| lookahead − reuse |"))
    assert "▲ +0.10 ± 0.00" in row and "= +0.00" in row and row.endswith("| 1 / 1 / 0 |")


def test_a_suite_section_summarises_each_group_and_names_the_tuned_heuristic(tmp_path: Path) -> None:
    """The hard suite cut to one setting: every policy row, the tuned reuse among them, own deadlines
    per class, pooled and per-setting gaps."""
    small = Suite("hard", (SettingGroup("N=8", "8 servers", (hard_suite().settings[0],)),))
    lines = suite_section(small, [], seeds=(1000, 1001, 1002))
    text = "\n".join(lines)
    assert "--preset hard --seeds 3" in text
    for policy in ("fifo", "greedy", "reuse", "edf", "reuse:hard"):
        assert f"| {policy} |" in text
    summary = next(line for line in lines if line.startswith("| reuse:hard |"))
    assert summary.count(",") == 2 and " / " in summary  # utility, SLO 1.0x / 1.5x, deadlines i / b
    assert "### hard N=8: 8 servers" in text and "| *best heuristic* |" in text


@pytest.mark.slow
def test_the_tiny_world_section_shows_measured_quality_and_schedules_on_a_calibrated_profile(
    tmp_path: Path,
) -> None:
    from policy_models.profiles import QualityCurve, TimingProfile, profile_to_json
    from services.reports.results import tiny_world_section

    assert tiny_world_section(tmp_path, (1000, 1001)) == []
    curve = {
        "model": "m", "samples": 8, "split": "validation", "guidance_scale": 7.5, "steps": [1, 5, 20],
        "clip": [0.4, 0.8, 0.9], "judge": {"color": [0.2, 0.9, 1.0], "shape": [0.25, 0.8, 0.9],
        "position": [0.2, 0.9, 1.0]}, "chance": {"color": 1 / 6, "shape": 0.25, "position": 0.2},
        "clip_spearman": 1.0,
    }  # fmt: skip
    (tmp_path / "quality.json").write_text(json.dumps(curve))
    lines = tiny_world_section(tmp_path, (1000, 1001))
    assert "| 1 | 0.400 | 0.200 | 0.250 | 0.200 | 0.000 |" in lines  # the paper gives no quality below 5
    assert "| 5 | 0.800 | 0.900 | 0.800 | 0.900 | 0.124 |" in lines
    assert not any("calibrated" in line for line in lines)

    profile = TimingProfile("tw-test", {1: 0.05, 2: 0.04, 4: 0.03}, {1: 1.0, 2: 1.2, 4: 1.5})
    record = profile_to_json(profile, QualityCurve(a=0.05, b=0.8, min_steps=5, flat_from=20))
    (tmp_path / "tinyworld-profile.json").write_text(json.dumps(record))
    lines = tiny_world_section(tmp_path, (1000, 1001))
    assert any(line.startswith("### The profile calibrated from a live run (`tw-test`)") for line in lines)
    assert "| 4 | 0.0300 | 0.1400 | 1.50 | 32.0 |" in lines
    assert any(line.startswith("| reuse |") for line in lines)
