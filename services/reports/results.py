"""docs/results.md: every policy on the paper's 15 settings beside the paper's published figures, the
training curves, training wall times and the per-decision latency of each policy.

Shipped policies live in policy_models/checkpoints/<name>/: a checkpoint (safetensors + config.json),
the run's metrics.csv and a card (card.json + CARD.md) written by `eat ship`. A shipped policy is
evaluated on the settings whose node count it was trained on, in the table row its card names (so the
per-size EAT policies for N = 4, 8, 12 fill one "eat" row, and the cross-size policy fills its own).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from policy_models import paired
from policy_models.bounds import setting_floors
from policy_models.config import PAPER_SETTINGS, SimConfig, paper_config, paper_configs
from policy_models.evaluation import (
    EvalRow,
    SettingKey,
    estimate,
    evaluate,
    evaluate_policy,
    make_setting,
    paired_gap,
    paper_settings,
)
from policy_models.paper_tables import PAPER_NAMES, TABLES, paper_value
from policy_models.policies import make_policy
from policy_models.profiles import PAPER_QUALITY, QUALITY_CURVES, REFERENCE, load_profile, quality_of_steps
from policy_models.shipped import (
    CARD_JSON,
    CARD_MD,
    METRICS_CSV,
    SHIPPED_ROOT,
    ShippedPolicy,
    shipped_policies,
)
from policy_models.sim.batched import BatchedClusterSim
from policy_models.slo import GOODPUT_SCALE, scale_label
from policy_models.suites import SettingGroup, Suite, hard_suite, paper_suite, shift_suite
from services.bench.sim import machine_info

HEURISTICS = ("random", "fifo", "greedy", "reuse", "edf", "harmony", "genetic")


# ----- shipping a trained run ------------------------------------------------------------------------
def ship(run_dir: Path, name: str, row: str, note: str = "", root: Path = SHIPPED_ROOT) -> Path:
    """Copy a run's best checkpoint and its metrics into root/name and write its card."""
    best = run_dir / "best"
    if not (best / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no best/ checkpoint to ship")
    target = root / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(best, target)
    shutil.copy2(run_dir / METRICS_CSV, target / METRICS_CSV)
    card = make_card(json.loads((best / "config.json").read_text()), read_metrics(target / METRICS_CSV))
    card |= {"name": name, "row": row, "note": note}
    (target / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (target / CARD_MD).write_text(card_paragraph(card) + "\n")
    return target


def make_card(config: dict[str, Any], metrics: dict[str, list[tuple[int, float]]]) -> dict[str, Any]:
    """What the card states, read from the checkpoint's own config and the run's logged metrics."""
    sims = config["sim_configs"]
    agent = config.get("agent", {})
    elapsed = metrics.get("perf/elapsed_s", [])
    return {
        "algorithm": config.get("algorithm") or agent.get("algorithm"),
        "sizes": sorted({cfg["n_servers"] for cfg in sims}),
        "rates": [cfg["arrival_rate"] for cfg in sims],
        "mode": sims[0]["mode"],
        "profile": sims[0]["profile_name"],
        "env_steps": config["progress"]["env_steps"],
        "updates": config["progress"]["updates"],
        "best_validation_utility": config["progress"]["best_eval_utility"],
        "wall_s": elapsed[-1][1] if elapsed else None,
        "best_at_s": _elapsed_at(elapsed, config["progress"]["env_steps"]),
        "teacher": config.get("training", {}).get("teacher"),
        "pretrain_updates": config.get("training", {}).get("pretrain_updates", 0),
        "q_filter": bool(agent.get("q_filter", True)),
        "bc_weight": agent.get("bc_weight", 0.0),
        "validation_seeds": config.get("training", {}).get("eval_seeds", [500, 501, 502, 503, 504]),
        "hint": agent.get("hint"),
        "residual": bool(agent.get("residual", False)),
        "seed": config["seed"],
        "code_version": config.get("code_version"),
    }


def _elapsed_at(elapsed: list[tuple[int, float]], step: int) -> float | None:
    """Wall seconds of the run once it had taken `step` environment steps: the first log at or after it
    (work done at that step, such as pretraining, is logged with the next row)."""
    after = [seconds for at, seconds in elapsed if at >= step]
    return after[0] if after else (elapsed[-1][1] if elapsed else None)


def card_paragraph(card: dict[str, Any]) -> str:
    wall = f"{card['wall_s'] / 60:.1f} minutes" if card.get("wall_s") else "an unrecorded time"
    sizes = ", ".join(str(n) for n in card["sizes"])
    rates = ", ".join(f"{r:g}" for r in sorted(set(card["rates"])))
    term = "a Q-filtered imitation term" if card.get("q_filter", True) else "an imitation term (no Q-filter)"
    weight = f" of weight {card['bc_weight']:g}" if card.get("bc_weight") else ""
    teacher = (
        f", learning from the {card['teacher']} heuristic ({card.get('pretrain_updates', 0)} imitation "
        f"updates, then SAC with {term}{weight})"
        if card.get("teacher")
        else ""
    )
    seeds = card.get("validation_seeds") or [500, 504]
    reached = f" (reached after {card['best_at_s'] / 60:.1f} minutes)" if card.get("best_at_s") else ""
    if card.get("hint"):
        corrects = "its actor outputs a correction to that action" if card.get("residual") else ""
        teacher += (
            f"; its network also reads the {card['hint']} heuristic's action on each state"
            f"{', and ' + corrects if corrects else ''} (learning.hints)"
        )
    text = (
        f"**{card['name']}** ({card['algorithm']}): trained on the simulator in {card['mode']} mode "
        f"(timing profile {card['profile']}) for N = {sizes} servers at arrival rates {rates}{teacher}; "
        f"a run of {wall} on one CPU thread (seed {card['seed']}). The shipped weights are its best on the "
        f"validation seeds {seeds[0]}-{seeds[-1]} (utility {card['best_validation_utility']:.3f}), taken at "
        f"{card['env_steps']} environment steps and {card['updates']} updates{reached}. It serves the "
        f"'{card['row']}' row of docs/results.md."
    )
    return f"{text} {card['note']}".strip()


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open() as handle:
        for record in csv.DictReader(handle):
            series.setdefault(record["metric"], []).append((int(record["step"]), float(record["value"])))
    return series


# ----- evaluation --------------------------------------------------------------------------------------
def evaluate_everything(
    shipped: Sequence[ShippedPolicy],
    seeds: Sequence[int],
    heuristics: Sequence[str] = HEURISTICS,
    configs: Sequence[SimConfig] | None = None,
) -> list[EvalRow]:
    """Heuristics on every setting; each shipped policy on the settings of its mode and trained sizes."""
    rows = []
    for cfg in configs or paper_configs():
        rows += [evaluate_policy(name, cfg, seeds) for name in heuristics]
        for policy in shipped:
            if policy.serves(cfg):
                rows.append(replace(evaluate_policy(policy.policy_name, cfg, seeds), policy=policy.row))
    return rows


def decision_latency_ms(name: str, cfg: SimConfig, repeats: int = 200) -> float:
    """Median milliseconds of one in-process decision at batch 1 (observation in, action out)."""
    policy = make_policy(name, cfg)
    policy.prepare()
    policy.begin(1, 0)
    obs = BatchedClusterSim(cfg, [0]).reset()
    for _ in range(10):
        policy.act(obs)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        policy.act(obs)
        timings.append(time.perf_counter_ns() - start)
    return statistics.median(timings) / 1e6


# ----- the document ------------------------------------------------------------------------------------
WARM_HEURISTICS = ("fifo", "greedy", "reuse")  # the warm section's baselines (metaheuristics: paper only)
METRICS = (
    ("quality", "Quality (CLIP score), cf. paper Table IX", "{:.3f}"),
    ("response_s", "Mean response time (s), cf. paper Table X", "{:.1f}"),
    ("reload_rate", "Reload rate, cf. paper Table XI", "{:.3f}"),
    ("utility", "Utility (reward per arrived task; the paper publishes none)", "{:.2f}"),
    (
        "response_to_floor",
        "Mean response over the hindsight floor at the policy's own quality (`eat floor`; 1 = no schedule "
        "could be faster at that quality)",
        "{:.2f}",
    ),
    (
        f"slo_{GOODPUT_SCALE:g}",
        f"SLO attainment: share of arrived tasks finished within {scale_label(GOODPUT_SCALE)} their "
        "standalone time (policy_models.slo)",
        "{:.3f}",
    ),
    (
        "goodput_per_min",
        f"Goodput: tasks within {scale_label(GOODPUT_SCALE)} their standalone time per minute",
        "{:.2f}",
    ),
)

PAPER_MODE_ONLY = {"response_to_floor"}  # the floor follows the paper-mode reload rule


def metric_table(
    rows: Sequence[EvalRow], metric: str, fmt: str, configs: Sequence[SimConfig] | None = None
) -> list[str]:
    """One row per policy over `configs` (default: the paper's 15 settings, with the paper's published
    figures under each policy that has them; other settings get none)."""
    with_paper = configs is None
    configs = paper_configs() if configs is None else configs
    header = [f"N={cfg.n_servers} λ={cfg.arrival_rate:g}" for cfg in configs]
    lines = ["| policy | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for name in dict.fromkeys(r.policy for r in rows):
        cells = []
        for cfg in configs:
            row = _row_for(rows, name, cfg)
            cells.append(format_cell(row.metric(metric), fmt) if row is not None else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        paper = TABLES.get(metric, {}).get(PAPER_NAMES.get(name, "")) if with_paper else None
        if paper is not None:
            lines.append(
                f"| *paper {PAPER_NAMES[name]}* | " + " | ".join(fmt.format(v) for v in paper) + " |"
            )
    return lines


def format_cell(estimate: Any, fmt: str) -> str:
    text = fmt.format(estimate.mean) if math.isfinite(estimate.mean) else "–"
    return f"{text} ± {fmt.format(estimate.ci95)}" if math.isfinite(estimate.ci95) else text


EAT_ROWS = ("eat", "eat-plain", "eat-cross", "eat-warm")  # plotted apart from the baselines


def plot_training_curves(shipped: Sequence[ShippedPolicy], path: Path) -> bool:
    """Validation utility against environment steps: one panel for EAT, one for the baselines. The
    y axis starts just below the lowest evaluation after the first, so the untrained actor's first
    evaluation (often 0: it never launches) does not flatten every curve; it is left below the axis."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    curves = [(p, read_metrics(p.directory / METRICS_CSV).get("eval/utility", [])) for p in shipped]
    curves = [(p, c) for p, c in curves if c]
    if not curves:
        return False
    panels = [
        (title, group)
        for title, group in (
            ("EAT", [(p, c) for p, c in curves if p.row in EAT_ROWS]),
            ("baselines", [(p, c) for p, c in curves if p.row not in EAT_ROWS]),
        )
        if group
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, (title, group) in zip(axes[0], panels, strict=True):
        for policy, curve in group:
            steps, values = zip(*curve, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=policy.card["name"])
        later = [value for _, curve in group for _, value in curve[1:]]
        if later:
            ax.set_ylim(bottom=min(later) - 0.25)
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("validation utility (seeds 500-504)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_results(
    out: Path,
    seeds: Sequence[int],
    root: Path = SHIPPED_ROOT,
    heuristics: Sequence[str] = HEURISTICS,
    configs: Sequence[SimConfig] | None = None,
    suites: bool = True,
) -> Path:
    """The whole document; `heuristics` and `configs` narrow it (tests), the paper's 15 by default;
    `suites` adds the shift and hard suites' sections."""
    started = time.perf_counter()
    shipped = shipped_policies(root)
    rows = evaluate_everything(shipped, seeds, heuristics, configs)
    lines = [
        "# Results",
        "",
        f"Generated by `eat results --out {out} --seeds {len(seeds)}` in "
        f"{time.perf_counter() - started:.0f} s on "
        f"{machine_info()['cpu_model']} ({machine_info()['cores']} cores). Evaluation seeds "
        f"{seeds[0]}..{seeds[-1]} (first episode of each), paper mode, reference timing profile; "
        "mean ± 95% CI over seeds. Rows in italics are the EAT paper's published figures for the same "
        "setting (its N=4 column ran on a real 4-GPU cluster, N=8/12 in its simulator). Our quality curve "
        "holds its value above 30 steps, so our quality can exceed the paper's 0.27 cap.",
        "",
    ]
    for metric, title, fmt in METRICS:
        lines += [f"## {title}", "", *metric_table(rows, metric, fmt), ""]
    lines += gap_section(rows, configs)
    lines += best_heuristic_section(rows, configs)
    if suites:
        lines += suite_section(shift_suite(), shipped, seeds)
        lines += suite_section(hard_suite(), shipped, seeds)
    lines += lookahead_section(out.parent / BENCH_DIR)
    lines += floor_section(rows, seeds, configs)
    lines += warm_section(shipped, seeds, [h for h in heuristics if h in WARM_HEURISTICS])
    lines += shipped_sections(shipped, out)
    lines += latency_section(shipped, heuristics)
    lines += executor_section(out.parent / BENCH_DIR)
    lines += tiny_world_section(out.parent / BENCH_DIR, seeds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


GAP_ROWS = ("eat", "eat-plain", "eat-cross")  # learned rows set against the heuristic seed by seed


def gap_section(
    rows: Sequence[EvalRow], configs: Sequence[SimConfig] | None, baseline: str = "reuse"
) -> list[str]:
    """Each EAT row's utility minus the heuristic's, paired over the same seeds (`paired_gap`), with
    where its 95% CI puts it: above, below, or not told apart on these seeds."""
    configs = paper_configs() if configs is None else configs
    present = [name for name in GAP_ROWS if any(r.policy == name for r in rows)]
    if not present or not any(r.policy == baseline for r in rows):
        return []
    header = [f"N={cfg.n_servers} λ={cfg.arrival_rate:g}" for cfg in configs]
    lines = [
        f"## Utility against the {baseline} heuristic, seed by seed",
        "",
        f"Utility minus {baseline}'s on the same workloads (mean ± 95% CI of the per-seed differences); "
        "▲ the CI lies above 0, ▼ below, = it spans 0 (not told apart on these seeds).",
        "",
        "| policy | " + " | ".join(header) + " | above / tied / below |",
        "|---|" + "---:|" * len(header) + "---:|",
    ]
    for name in present:
        cells, verdicts = [], []
        for cfg in configs:
            row, base = (_row_for(rows, policy, cfg) for policy in (name, baseline))
            if row is None or base is None:
                cells.append("–")
                continue
            gap = paired_gap(row, base)
            verdict = "▲" if gap.mean - gap.ci95 > 0 else "▼" if gap.mean + gap.ci95 < 0 else "="
            verdicts.append(verdict)
            ci = f" ± {gap.ci95:.2f}" if math.isfinite(gap.ci95) else ""
            cells.append(f"{verdict} {gap.mean:+.2f}{ci}")
        tally = " / ".join(str(verdicts.count(mark)) for mark in "▲=▼")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {tally} |")
    winners = [_best_mean(rows, cfg) for cfg in configs]
    tally = ", ".join(f"{name} {winners.count(name)}" for name in sorted(set(winners), key=winners.index))
    lines.append("| best mean utility, any policy | " + " | ".join(winners) + f" | {tally} |")
    return [*lines, ""]


def best_heuristic_section(rows: Sequence[EvalRow], configs: Sequence[SimConfig] | None) -> list[str]:
    """Every policy against the best heuristic of each setting, seed by seed, and pooled over the
    settings against reuse and against the best heuristic (policy_models.paired)."""
    suite = paper_suite() if configs is None else Suite("paper", (SettingGroup("paper", "", tuple(configs)),))
    return [
        "## Utility against the best heuristic, seed by seed",
        "",
        "Each policy's utility minus that of the best heuristic of the setting (the heuristic with the best "
        "mean utility there, picked on these seeds, which favours it), paired per seed: mean ± 95% CI; "
        "▲ above 0, ▼ below, = not told apart. Then pooled over every seed of every setting, against "
        "reuse and against the best heuristic, with the gap in SLO attainment at "
        f"{scale_label(GOODPUT_SCALE)} in brackets.",
        "",
        *paired.setting_gap_table(rows),
        "",
        *paired.pooled_gap_table(rows, suite, ("reuse", paired.BEST)),
        "",
    ]


SUITE_HEURISTICS = ("fifo", "greedy", "reuse", "edf")  # the cheap ones; metaheuristics optimise per setting
CROSS_ROW = "eat-cross"  # the shipped cross-size policy, evaluated at every setting of a suite


def suite_rows(suite: Suite, shipped: Sequence[ShippedPolicy], seeds: Sequence[int]) -> list[EvalRow]:
    """The cheap heuristics, reuse re-tuned for the suite, each shipped policy where it serves (by its
    row) and the cross-size EAT everywhere, on every setting of `suite`."""
    heuristics = (*SUITE_HEURISTICS, f"reuse:{suite.name}")
    rows = []
    for cfg in suite.settings:
        rows += [evaluate_policy(name, cfg, seeds) for name in heuristics]
        for policy in shipped:
            if policy.row in SUITE_ROWS and (policy.serves(cfg) or policy.row == CROSS_ROW):
                rows.append(replace(evaluate_policy(policy.policy_name, cfg, seeds), policy=policy.row))
    return rows


SUITE_ROWS = ("eat", "eat-warm", CROSS_ROW)  # learned rows shown on the shift and hard suites


def suite_metric_table(rows: Sequence[EvalRow], suite: Suite) -> list[str]:
    """Per group: each policy's mean utility, SLO attainment at 1.0x and 1.5x, and (with SLO classes)
    the share of interactive / batch tasks that met their own deadline, averaged over the group's
    settings (equal seeds per setting, so the mean of every episode)."""
    lines = [
        "| policy | "
        + " | ".join(f"{g.name}: utility, SLO 1.0x / 1.5x, own deadlines i / b" for g in suite.groups)
        + " |",
        "|---|" + "---:|" * len(suite.groups),
    ]
    for policy in dict.fromkeys(r.policy for r in rows):
        cells = []
        for group in suite.groups:
            mine = [r for r in paired.rows_in_group(rows, group) if r.policy == policy]
            if not mine:
                cells.append("–")
                continue
            utility = statistics.fmean(r.utility.mean for r in mine)
            slo = [statistics.fmean(r.slo_at(scale).mean for r in mine) for scale in (1.0, 1.5)]
            own = [statistics.fmean(r.class_attainment[c].mean for r in mine) for c in (0, 1)]
            deadlines = " / ".join(f"{v:.2f}" for v in own) if all(map(math.isfinite, own)) else "–"
            cells.append(f"{utility:.2f}, {slo[0]:.3f} / {slo[1]:.3f}, {deadlines}")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines


SUITE_TEXT = {
    "shift": (
        "Under shift: other timings, warm mode, unseen sizes, other rates",
        "clusters that differ from the ones the shipped policies and the heuristic's knobs were made for",
    ),
    "hard": (
        "The hard suite: heterogeneous clusters, skewed models, bursts and deadlines",
        "warm clusters of 8-32 servers of speeds 0.5-2x and memory for 1-3 models, 4-6 models with Zipf "
        "popularity, a ramp and two 4x bursts, per-task deadlines in two priority classes, and servers "
        "that go down or slow down and come back (docs/simulator.md)",
    ),
}


def suite_section(suite: Suite, shipped: Sequence[ShippedPolicy], seeds: Sequence[int]) -> list[str]:
    """A suite's figures: the metric summary per group, the pooled gaps to reuse and to the best
    heuristic, and the per-setting gaps to the best heuristic."""
    rows = suite_rows(suite, shipped, seeds)
    title, what = SUITE_TEXT[suite.name]
    learned = " ".join(f"shipped:{row}" for row in SUITE_ROWS if row != CROSS_ROW)
    lines = [
        f"## {title}",
        "",
        f"`eat eval --preset {suite.name} --seeds {len(seeds)} --policies {' '.join(SUITE_HEURISTICS)} "
        f"reuse:{suite.name} {learned} checkpoint:policy_models/checkpoints/{CROSS_ROW}` gives these "
        f"figures: {what}. `reuse:{suite.name}` is the reuse heuristic with its knobs re-tuned for this "
        "suite on seeds 0-63 (`eat tune`). A per-size EAT plays only the sizes and mode it was trained "
        "for; the cross-size EAT plays every setting.",
        "",
        *suite_metric_table(rows, suite),
        "",
        "Utility gaps pooled over each group (mean ± 95% CI over every seed of every setting; the SLO "
        "attainment gap at 1.5x in brackets):",
        "",
        *paired.pooled_gap_table(rows, suite, ("reuse", paired.BEST)),
        "",
    ]
    for group in suite.groups:
        lines += [
            f"### {suite.name} {group.name}: {group.description}",
            "",
            *paired.setting_gap_table(paired.rows_in_group(rows, group)),
            "",
        ]
    return lines


def _best_mean(rows: Sequence[EvalRow], cfg: SimConfig) -> str:
    here = _rows_at(rows, cfg)
    return max(here, key=lambda r: r.utility.mean).policy if here else "–"


def lookahead_section(bench_dir: Path) -> list[str]:
    """The `eat lookahead` reports kept in docs/bench/ (lookahead-*.json): how far a one-step lookahead
    over the heuristic gets above it, seed by seed: room the learned policies have not yet taken."""
    lines = []
    for path in sorted(bench_dir.glob("lookahead-*.json")):
        report = json.loads(path.read_text())
        rows = report["rows"]
        cells, verdicts = [], []
        for row in rows:
            gap = estimate([t - b for t, b in zip(row["teacher_utility"], row["base_utility"], strict=True)])
            verdict = "▲" if gap.mean - gap.ci95 > 0 else "▼" if gap.mean + gap.ci95 < 0 else "="
            verdicts.append(verdict)
            cells.append(f"{verdict} {gap.mean:+.2f} ± {gap.ci95:.2f}")
        seeds = rows[0]["seeds"]
        settings = report["rollout"]
        lines += [
            f"## Headroom: a lookahead over the {report['base']} heuristic (`{path.name}`)",
            "",
            f"`eat lookahead --preset paper --seeds {len(seeds)}` (seeds {seeds[0]}..{seeds[-1]}): at every "
            f"decision the rollout teacher (`policy_models/learning/rollout.py`) simulates each candidate "
            f"action followed by the heuristic to the episode's end in {settings['samples']} sampled "
            f"futures, and leaves the heuristic's action only for a gain above {settings['z']:g} standard "
            "errors. It is a planner costing hundreds of simulated episodes per decision, not a shipped "
            "policy: it shows how much better than the heuristic a policy can do on these workloads.",
            "",
            "| | "
            + " | ".join(f"N={r['nodes']} λ={r['rate']:g}" for r in rows)
            + " | above / tied / below |",
            "|---|" + "---:|" * len(rows) + "---:|",
            "| lookahead − "
            + report["base"]
            + " | "
            + " | ".join(cells)
            + " | "
            + " / ".join(str(verdicts.count(mark)) for mark in "▲=▼")
            + " |",
            "",
        ]
    return lines


FLOOR_QUALITY = 0.26  # the mean quality the floor holds every schedule to (the paper's EAT reaches it)
PAPER_RESPONSE_SHARE = 0.7  # the share of the paper's EAT response time we set out to reach at N=4


def floor_section(
    rows: Sequence[EvalRow], seeds: Sequence[int], configs: Sequence[SimConfig] | None = None
) -> list[str]:
    """The hindsight floor on mean response (`policy_models.bounds`) beside the paper's EAT and ours, and
    where a share of the paper's figure lies below the floor, i.e. out of every policy's reach here."""
    with_paper = configs is None
    configs = paper_configs() if configs is None else configs
    floors = [
        estimate([f.mean_response_s for f in setting_floors(cfg, seeds, FLOOR_QUALITY)]) for cfg in configs
    ]
    header = [f"N={cfg.n_servers} λ={cfg.arrival_rate:g}" for cfg in configs]
    table = [
        "| | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(header),
        f"| floor, mean quality ≥ {FLOOR_QUALITY:g} | "
        + " | ".join(format_cell(f, "{:.1f}") for f in floors)
        + " |",
    ]
    eat = [_row_for(rows, "eat", cfg) for cfg in configs]
    if all(row is not None for row in eat):
        table.append(
            "| eat (its quality) | "
            + " | ".join(f"{row.response_s.mean:.1f} ({row.quality.mean:.3f})" for row in eat if row)
            + " |"
        )
    out_of_reach = []
    if with_paper:
        paper = [
            (paper_value("response_s", "eat", i), paper_value("quality", "eat", i))
            for i in range(len(configs))
        ]
        table.append(
            "| *paper EAT (its quality)* | " + " | ".join(f"{r:.1f} ({q:.3f})" for r, q in paper) + " |"
        )
        shares = [PAPER_RESPONSE_SHARE * r for r, _ in paper]
        table.append(
            f"| {PAPER_RESPONSE_SHARE:g} × paper EAT | " + " | ".join(f"{v:.1f}" for v in shares) + " |"
        )
        out_of_reach = [h for h, v, f in zip(header, shares, floors, strict=True) if v < f.mean]
    lines = [
        "## How fast can any policy respond? A hindsight floor",
        "",
        f"`eat floor --preset paper --seeds {len(seeds)}` (`policy_models/bounds.py`): for each seed's "
        "workload, a floor on mean response time that no schedule serving every task at a mean quality "
        f"≥ {FLOOR_QUALITY:g} can beat, even one knowing every arrival in advance. It adds the least run "
        "time reaching that quality to the least wait + init the paper-mode reload rule forces: every "
        "group starts unloaded, and a task spanning the whole cluster and a smaller one cannot both find "
        "their group loaded one after the other. Server capacity is relaxed, so the floor is loose where "
        "queues build up. Mean ± 95% CI over the seeds; the tests check it against real episodes.",
        "",
        *table,
        "",
    ]
    if out_of_reach:
        lines += [
            f"{PAPER_RESPONSE_SHARE:g} × the paper's EAT response lies below the floor at "
            + ", ".join(out_of_reach)
            + f": no policy reaches it there with mean quality ≥ {FLOOR_QUALITY:g} on these workloads.",
            "",
        ]
    return lines


def _rows_at(rows: Sequence[EvalRow], cfg: SimConfig) -> list[EvalRow]:
    return [r for r in rows if r.setting == SettingKey.of(cfg)]


def _row_for(rows: Sequence[EvalRow], policy: str, cfg: SimConfig) -> EvalRow | None:
    match = [r for r in _rows_at(rows, cfg) if r.policy == policy]
    return match[0] if match else None


def warm_section(
    shipped: Sequence[ShippedPolicy], seeds: Sequence[int], heuristics: Sequence[str]
) -> list[str]:
    """Warm mode (our executors: models stay resident, any gang of holders reuses them): the warm
    policies against the heuristics on the paper's rates for the warm policies' cluster sizes."""
    warm = [p for p in shipped if p.mode == "warm"]
    if not warm:
        return []
    sizes = sorted({n for p in warm for n in p.sizes})
    configs = [cfg for cfg in paper_settings(mode="warm") if cfg.n_servers in sizes]
    rows = evaluate_everything(warm, seeds, heuristics, configs)
    lines = [
        "## Warm mode",
        "",
        "Executors that keep up to 2 of 3 models resident and form any gang of holders without "
        "reloading (`warm_config`: servers of speeds 1.0, 0.8, 1.25); the paper has no such setting.",
        "",
    ]
    for metric, title, fmt in METRICS:
        if metric in PAPER_MODE_ONLY:
            continue
        lines += [f"### {title.split(',')[0]}", "", *metric_table(rows, metric, fmt, configs), ""]
    return lines


def shipped_sections(shipped: Sequence[ShippedPolicy], out: Path) -> list[str]:
    lines = ["## Shipped policies", ""]
    if not shipped:
        return [*lines, "None yet: no trained checkpoint has been shipped to policy_models/checkpoints/.", ""]
    lines += [f"- {(p.directory / CARD_MD).read_text().strip()}" for p in shipped]
    lines += [
        "",
        "| policy | algorithm | sizes | env steps | updates | wall time |",
        "|---|---|---|---:|---:|---:|",
    ]
    for p in shipped:
        wall = f"{p.card['wall_s'] / 60:.1f} min" if p.card.get("wall_s") else "–"
        sizes = ", ".join(map(str, p.sizes))
        lines.append(
            f"| {p.card['name']} | {p.card['algorithm']} | {sizes} | {p.card['env_steps']} | "
            f"{p.card['updates']} | {wall} |"
        )
    image = out.parent / "img" / "training_curves.png"
    if plot_training_curves(shipped, image):
        lines += ["", f"![training curves](img/{image.name})"]
    return [*lines, ""]


BENCH_DIR = "bench"  # docs/bench/executor-*.json: `eat bench executor --json` reports to show


def executor_section(bench_dir: Path) -> list[str]:
    """The `eat bench executor` reports kept in docs/bench/, one row each (CPU and, when measured, GPU)."""
    reports = [json.loads(path.read_text()) for path in sorted(bench_dir.glob("executor-*.json"))]
    lines = [
        "## Executors: patch-parallel gangs",
        "",
        "`eat bench executor --json docs/bench/executor-<name>.json`: seconds per denoising step by gang "
        "size (sync mode), a cold model load against re-forming a gang with the model warm, and the "
        "exactness of patch parallelism (max |sync - single-process| latents; PSNR of displaced vs sync).",
        "",
        "| device | model | px | step s, k=1 | k=2 | k=4 | cold load s | regroup s | ratio | sync diff | "
        "displaced PSNR dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        steps = r.get("step_s", {})
        ratio = r["regroup_s"] / r["cold_load_s"] if r.get("cold_load_s") else math.nan
        lines.append(
            f"| {r.get('device')} | {r.get('model')} | {r.get('resolution')} | "
            + " | ".join(f"{steps.get(k, math.nan):.4f}" for k in ("1", "2", "4"))
            + f" | {r.get('cold_load_s', math.nan):.3f} | {r.get('regroup_s', math.nan):.4f} | {ratio:.3f} | "
            f"{r.get('sync_max_abs_diff', math.nan):.1e} | {r.get('displaced_psnr_db', math.nan):.1f} |"
        )
    if not any(str(r.get("device", "")).startswith("cuda") for r in reports):
        lines += [
            "",
            "No GPU figures yet: no GPU machine has been available to this project's sessions. "
            "`scripts/gpu_bench.sh` measures SD 1.5's UNet architecture (random weights) at 512 and "
            "1024 px on CUDA (NCCL) and writes its reports here.",
        ]
    return [*lines, ""]


QUALITY_JSON = "quality.json"  # docs/bench/: `eat bench quality --json`
TINY_PROFILE_JSON = "tinyworld-profile.json"  # docs/bench/: `eat calibrate --out` on a live run's traces
CALIBRATED_POLICIES = ("reuse", "shipped:eat")
CALIBRATION_RUN = "eat demo --out out/calib --tasks 48 --steps 1,2,3,5,8,12,20,30"


def tiny_world_section(bench_dir: Path, seeds: Sequence[int]) -> list[str]:
    """The tiny world's measured quality curve beside the paper's, the profile calibrated from a live
    run of it, and reuse and the shipped EAT scheduling on that profile."""
    quality_path, profile_path = bench_dir / QUALITY_JSON, bench_dir / TINY_PROFILE_JSON
    if not quality_path.is_file():
        return []
    curve = json.loads(quality_path.read_text())
    lines = [
        "## The tiny world: quality against steps, measured",
        "",
        f"`eat bench quality --json docs/bench/{QUALITY_JSON}`: the shipped tiny-world pipeline "
        f"(docs/models.md) draws {curve['samples']} prompts of the `{curve['split']}` split at each step "
        f"count (DDIM, guidance {curve['guidance_scale']:g}); the evaluator's CLIP scorer scores each "
        "image with its prompt and the judge reads its colour, shape and position (chance "
        + ", ".join(f"{name} {value:.2f}" for name, value in curve["chance"].items())
        + "). The paper's curve is on real CLIP's scale (about 0.2-0.3), the tiny scorer's on its own.",
        "",
        "| steps | CLIP (tiny world) | judge colour | judge shape | judge position | paper's q(s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for i, steps in enumerate(curve["steps"]):
        judged = " | ".join(f"{curve['judge'][name][i]:.3f}" for name in ("color", "shape", "position"))
        lines.append(f"| {steps} | {curve['clip'][i]:.3f} | {judged} | {quality_of_steps(steps):.3f} |")
    lines += ["", f"Spearman correlation of CLIP score with steps: {curve['clip_spearman']:.2f}.", ""]
    if profile_path.is_file():
        lines += calibrated_section(profile_path, seeds)
    return lines


def calibrated_section(profile_path: Path, seeds: Sequence[int]) -> list[str]:
    profile = load_profile(profile_path)
    fitted = QUALITY_CURVES.get(profile.name)
    sizes = [k for k in profile.patch_sizes if k in REFERENCE.step_s]
    lines = [
        f"### The profile calibrated from a live run (`{profile.name}`)",
        "",
        f"`eat calibrate` fitted `docs/bench/{TINY_PROFILE_JSON}` to the traces that the executors and the "
        f"evaluator wrote during a live run of the tiny world (`{CALIBRATION_RUN}`, then `eat calibrate "
        f"--timings out/calib/stack/state --scores out/calib/stack/state --name {profile.name} --out "
        f"docs/bench/{TINY_PROFILE_JSON}`: real diffusers executors on "
        "CPU, real CLIP scores). Step and load times beside the reference profile's:",
        "",
        "| gang size | step s | reference step s | init s | reference init s |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {profile.step_s[k]:.4f} | {REFERENCE.step_s[k]:.4f} | {profile.init_s[k]:.2f} | "
            f"{REFERENCE.init_s[k]:.1f} |"
            for k in sizes
        ),
        "",
    ]
    if fitted is not None:
        lines += [
            f"Fitted quality curve: q(s) = {fitted.a:.4f} ln s + {fitted.b:.4f} for {fitted.min_steps} <= s "
            f"<= {fitted.flat_from} (the paper's: {PAPER_QUALITY.a:.4f} ln s + {PAPER_QUALITY.b:.4f}).",
            "",
        ]
    if profile.notes:
        lines += [f"Fit notes: {profile.notes}", ""]
    # The paper's N=4 settings: the live run (eat demo) has 4 executors.
    nodes, patches, rates = PAPER_SETTINGS[0]
    configs = [make_setting(nodes, rate, "paper", profile.name, patches) for rate in rates]
    rows = evaluate(CALIBRATED_POLICIES, configs, seeds)
    lines += [
        f"Scheduling on it: the paper's N={nodes} settings (paper mode) with this profile, {len(seeds)} "
        "seeds. The fitted curve puts every step count from 5 up above the paper's quality threshold "
        "(0.25 on real CLIP's scale), so the steps a policy saves cost it little quality here.",
        "",
    ]
    for metric, title, fmt in METRICS[:4]:
        lines += [f"#### {title.split(',')[0]}", "", *metric_table(rows, metric, fmt, configs), ""]
    return lines


def latency_section(shipped: Sequence[ShippedPolicy], heuristics: Sequence[str]) -> list[str]:
    cfg = paper_config(4, 0.05)
    names = [*heuristics, *(p.policy_name for p in shipped if 4 in p.sizes)]
    lines = [
        "## Per-decision latency",
        "",
        "In process, batch 1, N=4 observation, median of 200 decisions "
        "(the reference's trained EAT takes 3.2 ms).",
        "",
        "| policy | ms |",
        "|---|---:|",
    ]
    labels = {p.policy_name: p.card["name"] for p in shipped}
    for name in names:
        lines.append(f"| {labels.get(name, name)} | {decision_latency_ms(name, cfg):.3f} |")
    return [*lines, ""]
