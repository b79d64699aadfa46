"""`eat bench hybrid`: what split-point inference gains, measured on the tiny world.

- batch speedup: the edge's early phase for several requests in one UNet forward per step against one
  request at a time (the same requests, the same steps, on this machine's CPU);
- the split curve: prompt and personal fidelity against the split point (`tinyworld.split_curve`);
- the schedulers on the offloading simulator, whose accuracy model is fitted to that curve and whose
  batch cost is fitted to that speedup.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diffusers import StableDiffusionPipeline

from services.executor import split_phase
from tinyworld.scenes import RESOLUTION, split_scenes
from tinyworld.split_curve import SPLITS, STEPS, measure_split_curve

BATCH_SIZES = (1, 2, 4, 8)
SPEEDUP_SPLIT = STEPS // 3  # the early phase timed: a third of the steps, a common shared share


def early_phase_wall_s(
    pipeline: StableDiffusionPipeline, k: int, requests: int, steps: int, split: int
) -> float:
    """Wall seconds to run steps [0, split) of `requests` requests in batches of k."""
    pairs = split_scenes("validation", requests)
    prompts, seeds = [scene.caption for scene, _ in pairs], [seed for _, seed in pairs]
    started = time.perf_counter()
    for start in range(0, requests, k):
        phase = split_phase.begin(
            pipeline, prompts[start : start + k], seeds[start : start + k], steps, RESOLUTION
        )
        split_phase.advance(pipeline, phase, split)
    return time.perf_counter() - started


def batch_speedup(
    pipeline: StableDiffusionPipeline,
    steps: int,
    split: int,
    sizes: Sequence[int] = BATCH_SIZES,
    repeats: int = 3,
) -> dict[str, float]:
    """Throughput of batches of k against one request at a time: {k: speedup}, "1" = 1.0. Every batch
    size runs the same max(sizes) requests; each figure is the median of `repeats` interleaved runs, so
    a slow moment of the machine falls on every size alike."""
    requests = max(sizes)
    early_phase_wall_s(pipeline, requests, requests, steps, 1)  # warm-up: first calls allocate
    walls: dict[int, list[float]] = {k: [] for k in sizes}
    for _ in range(repeats):
        for k in sizes:
            walls[k].append(early_phase_wall_s(pipeline, k, requests, steps, split))
    one = statistics.median(walls[1]) if 1 in walls else statistics.median(walls[min(sizes)])
    return {str(k): one / statistics.median(walls[k]) for k in sizes}


def measure(samples: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The two measurements on the tiny world: the batch speedup of the edge's early phase and the
    split curve of the shipped users (`tinyworld.weights.USER_STYLES`)."""
    import torch

    from tinyworld.judge import Judge
    from tinyworld.personal import STYLE_ATTRIBUTES, AdapterBank
    from tinyworld.scorer import load_scorer
    from tinyworld.text_to_image import load_pipeline
    from tinyworld.weights import PIPELINE_DIR, SCORER_DIR, STYLE_JUDGE_DIR, USER_STYLES, USERS_DIR, cpu_model

    pipeline = load_pipeline(PIPELINE_DIR)
    torch.set_num_threads(1)  # one edge core: batching gains come from the model, not from more threads
    speedup = batch_speedup(pipeline, STEPS, SPEEDUP_SPLIT)
    if progress is not None:
        progress("batch speedup " + ", ".join(f"k={k}: {v:.2f}x" for k, v in speedup.items()))
    torch.set_num_threads(2)
    bank = AdapterBank(pipeline)
    for user in USER_STYLES:
        bank.load(user, USERS_DIR / user)
    curve = measure_split_curve(
        pipeline,
        bank,
        USER_STYLES,
        Judge.load(STYLE_JUDGE_DIR, STYLE_ATTRIBUTES),
        load_scorer(SCORER_DIR),
        samples,
        STEPS,
        SPLITS,
        progress=progress,
    )
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "speedup_torch_threads": 1},
        "steps": STEPS,
        "speedup_split": SPEEDUP_SPLIT,
        "batch_speedup": speedup,
        "split_curve": curve.points(),
        "split_curve_detail": curve.to_json(),
    }


def save_curve(measured: dict[str, Any], path: Path) -> None:
    """The measurement the offloading scheduler fits its accuracy and batch-cost models to."""
    record = {
        "source": "eat bench hybrid (tiny world)",
        "machine": measured["machine"],
        "steps": measured["steps"],
        "points": measured["split_curve"],
        "batch_speedup": measured["batch_speedup"],
        "users": measured["split_curve_detail"]["users"],
        "samples": measured["split_curve_detail"]["samples"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def compare_policies(
    measured: dict[str, Any],
    users: Sequence[int],
    servers: Sequence[int],
    seeds: Sequence[int],
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every offloading policy on the simulator, with the accuracy model fitted to the measured curve
    and the batch cost to the measured speedup; the optimality gap on sizes where the optimum is exact;
    drl-convex's decision time for 32 users on one core."""
    import torch

    from policy_models.offload.evaluate import decision_ms, evaluate, instance_config, optimality_gap
    from policy_models.offload.model import curve_from_measurement

    torch.set_num_threads(1)
    curve = curve_from_measurement({"steps": measured["steps"], "points": measured["split_curve"]})
    speedup = {int(k): float(v) for k, v in measured["batch_speedup"].items()}
    config = instance_config(None, speedup)
    rows = evaluate(users=users, servers=servers, seeds=seeds, curve=curve, config=config)
    if progress is not None:
        progress(f"{len(rows)} policy rows on {len(seeds)} seeds")
    gaps = optimality_gap(seeds=seeds, curve=curve, config=config)
    return {
        "seeds": [seeds[0], seeds[-1]],
        "beta": config.beta,
        "fitted_accuracy": list(curve.values),
        "policies": rows,
        "optimality_gap": summary_gap(gaps),
        "optimality": gaps,
        "decision_ms": decision_ms(seeds=seeds, curve=curve, config=config),
        "plot_servers": 2 if 2 in servers else servers[0],
    }


def format_report(report: dict[str, Any]) -> str:
    lines = ["batch speedup of the early phase (one UNet forward per step for k requests):"]
    lines.append("  " + ", ".join(f"k={k} {v:.2f}x" for k, v in report["batch_speedup"].items()))
    lines.append("split  CLIP   personal  accuracy")
    for point in report["split_curve"]:
        s, c, p, a = point["split"], point["clip"], point["personal"], point["accuracy"]
        lines.append(f"{s:>5}  {c:.3f}  {p:.3f}     {a:.3f}")
    if "policies" not in report:
        return "\n".join(lines)
    lines.append(f"mean utility per user, seeds {report['seeds'][0]}-{report['seeds'][1]} (95% half-width)")
    for row in report["policies"]:
        if row["policy"] != "drl-convex":
            continue
        nan = float("nan")
        lines.append(
            f"  N={row['users']:>2} K={row['servers']}: drl-convex "
            f"{row['utility']:.3f}±{row['utility_ci95']:.3f}"
            f"  vs {row.get('best_fixed', '-')} {row.get('vs_best_fixed', nan):+.3f}"
            f"±{row.get('vs_best_fixed_ci95', nan):.3f}"
            f"  vs greedy {row.get('vs_greedy', nan):+.3f}±{row.get('vs_greedy_ci95', nan):.3f}"
        )
    decision = report["decision_ms"]
    lines.append(f"optimality gap (mean over sizes): {report['optimality_gap']:.2%}")
    lines.append(
        f"decision for {decision['users']} users, {decision['servers']} servers: "
        f"median {decision['median_ms']:.1f} ms, p95 {decision['p95_ms']:.1f} ms"
    )
    return "\n".join(lines)


def summary_gap(gap_rows: Sequence[dict]) -> float:
    """The bench's one `optimality_gap` figure: the mean relative gap over every size where the optimum
    was computed, each size weighted alike."""
    return float(sum(row["gap"] for row in gap_rows) / len(gap_rows)) if gap_rows else float("nan")


def write_plots(report: dict, directory: Path) -> list[Path]:
    """The split curve (prompt fidelity, personal fidelity per user and pooled, accuracy) and the
    policies' mean utility per user count, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    detail = report["split_curve_detail"]
    fig, ax = plt.subplots(figsize=(8.4, 4.0))
    for user, curves in detail["per_user"].items():
        ax.plot(
            detail["splits"], curves["personal"], "--", alpha=0.6, label=f"{user} ({detail['users'][user]})"
        )
    points = report["split_curve"]
    splits = [p["split"] for p in points]
    ax.plot(splits, [p["personal"] for p in points], "k-o", label="personal fidelity (pooled)")
    ax.plot(splits, [p["clip"] for p in points], "b-s", label="prompt fidelity (CLIP)")
    ax.plot(splits, [p["accuracy"] for p in points], "r-^", label="accuracy = CLIP x personal")
    ax.set_xlabel(f"split point s (steps on the edge's base model, of {detail['steps']})")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Accuracy against the split point (tiny world)")
    split_png = directory / "hybrid_split_curve.png"
    fig.tight_layout()
    fig.savefig(split_png, dpi=120)
    plt.close(fig)

    rows = [row for row in report["policies"] if row["servers"] == report["plot_servers"]]
    names = list(dict.fromkeys(row["policy"] for row in rows))
    users = sorted({row["users"] for row in rows})
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        mine = {row["users"]: row for row in rows if row["policy"] == name}
        xs = [j + i * width for j, n in enumerate(users) if n in mine]
        ax.bar(
            xs,
            [mine[n]["utility"] for n in users if n in mine],
            width,
            yerr=[mine[n]["utility_ci95"] for n in users if n in mine],
            label=name,
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(users))], [str(n) for n in users])
    ax.set_xlabel(f"users ({report['plot_servers']} edge servers)")
    ax.set_ylabel("mean utility per user (accuracy - lambda x latency)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Offloading policies on the simulator (95% intervals over seeds)")
    utility_png = directory / "hybrid_utility.png"
    fig.tight_layout()
    fig.savefig(utility_png, dpi=120)
    plt.close(fig)
    return [split_png, utility_png]
