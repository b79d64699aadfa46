"""Evaluate scheduling policies over settings and seeds, and report like the EAT paper's Tables IX-XI.

Each (policy, setting) runs one `BatchedClusterSim` with one environment per seed; the first episode
each environment finishes is that seed's sample. Per metric we report the mean over seeds and the
half-width of a 95% Student-t confidence interval (DESIGN section 5: mean and 95% CI over >= 5 seeds).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy_models.bounds import seed_floor
from policy_models.config import PAPER_SETTINGS, Mode, SimConfig, paper_config, warm_config
from policy_models.policies import Policy, make_policy, policy_serves
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.stats import EpisodeStats
from policy_models.slo import GOODPUT_SCALE, SLO_SCALES, scale_label

DEFAULT_SEED_BASE = 1000

# Two-sided 95% Student-t critical values t_{0.975, df} (standard tables; scipy is not a dependency).
# Between tabulated df we use the next smaller one, which widens the interval slightly (conservative).
_T_975: dict[int, float] = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
    19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052,
    28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip
_Z_975 = 1.960  # the normal limit, for df beyond the table


# ----- settings and seeds ----------------------------------------------------------------------------
def make_setting(
    nodes: int,
    rate: float,
    mode: Mode = "paper",
    profile: str = "reference",
    patch_choices: tuple[int, ...] | None = None,
) -> SimConfig:
    """One evaluation setting; patch choices default to the paper's for that node count."""
    overrides: dict[str, Any] = {"profile_name": profile}
    if patch_choices is not None:
        overrides["patch_choices"] = patch_choices
    build = paper_config if mode == "paper" else warm_config
    return build(nodes, rate, **overrides)


def paper_settings(mode: Mode = "paper", profile: str = "reference") -> list[SimConfig]:
    """The 15 settings of the paper's Tables IX-XI, in table order."""
    return [
        make_setting(n, rate, mode, profile, patches)
        for n, patches, rates in PAPER_SETTINGS
        for rate in rates
    ]


def grid_settings(
    nodes: Iterable[int], rates: Iterable[float], mode: Mode = "paper", profile: str = "reference"
) -> list[SimConfig]:
    rates = list(rates)
    return [make_setting(n, rate, mode, profile) for n in nodes for rate in rates]


def default_seeds(count: int, base: int = DEFAULT_SEED_BASE) -> tuple[int, ...]:
    return tuple(range(base, base + count))


# ----- statistics ------------------------------------------------------------------------------------
def t_critical_95(df: int) -> float:
    if df < 1:
        raise ValueError("a confidence interval needs at least 2 samples")
    if df > max(_T_975):
        return _Z_975
    return _T_975[max(d for d in _T_975 if d <= df)]


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds and the half-width of its 95% confidence interval (nan with < 2 samples)."""

    mean: float
    ci95: float


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and Student-t 95% CI half-width over the finite values (an episode that launched nothing
    has no mean response time; it is left out rather than poisoning the average)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return Estimate(math.nan, math.nan)
    if finite.size == 1:
        return Estimate(float(finite[0]), math.nan)
    half = t_critical_95(finite.size - 1) * finite.std(ddof=1) / math.sqrt(finite.size)
    return Estimate(float(finite.mean()), float(half))


# ----- settings as keys ------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class SettingKey:
    """What tells two evaluation settings apart in a report: mode, timing profile, size and rate."""

    mode: str
    profile: str
    nodes: int
    rate: float
    tag: str = ""

    @classmethod
    def of(cls, cfg: SimConfig) -> SettingKey:
        return cls(cfg.mode, cfg.profile_name, cfg.n_servers, cfg.arrival_rate, cfg.tag)

    @property
    def label(self) -> str:
        """'N=4 λ=0.05' on the paper's own setting; the tag, or mode and profile, named when they differ
        from it."""
        if self.tag:
            return f"{self.tag} N={self.nodes} λ={self.rate:g}"
        prefix = [] if self.mode == "paper" else [self.mode]
        if self.profile != "reference":
            prefix.append(self.profile.removeprefix("paper-"))
        return " ".join([*prefix, f"N={self.nodes} λ={self.rate:g}"])


# ----- running -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRow:
    """One policy on one setting. Wall times do not take part in equality: results must be
    reproducible, timings never are."""

    policy: str
    nodes: int
    rate: float
    mode: str
    profile: str
    seeds: tuple[int, ...]
    quality: Estimate
    response_s: Estimate
    reload_rate: Estimate
    utility: Estimate
    efficiency: Estimate
    unserved: Estimate
    lower_bound_s: float
    # Utility of each seed's episode, in seed order: paired comparisons of two policies (`paired_gap`).
    seed_utilities: tuple[float, ...] = ()
    # Response over the hindsight floor at the episode's own mean quality (policy_models.bounds): how
    # far from the fastest any schedule could be at that quality (paper mode, every task served).
    response_to_floor: Estimate = Estimate(math.nan, math.nan)
    # SLO attainment (policy_models.slo) at each of SLO_SCALES, and its per-seed values [scale][seed].
    slo: tuple[Estimate, ...] = ()
    seed_slo: tuple[tuple[float, ...], ...] = ()
    goodput_per_min: Estimate = Estimate(math.nan, math.nan)
    tag: str = ""  # SimConfig.tag of the setting
    # With SLO classes: the share of each class's tasks (interactive, batch) that met their own deadline.
    class_attainment: tuple[Estimate, Estimate] = (Estimate(math.nan, math.nan), Estimate(math.nan, math.nan))
    prepare_s: float = field(default=0.0, compare=False)
    run_s: float = field(default=0.0, compare=False)

    @property
    def ratio_to_lower_bound(self) -> float:
        return self.response_s.mean / self.lower_bound_s if self.lower_bound_s > 0 else math.nan

    @property
    def setting(self) -> SettingKey:
        return SettingKey(self.mode, self.profile, self.nodes, self.rate, self.tag)

    def slo_at(self, scale: float) -> Estimate:
        return self.slo[SLO_SCALES.index(scale)]

    def metric(self, name: str) -> Estimate:
        """An estimate by name: a field ('utility', 'goodput_per_min', ...) or 'slo_<scale>' ('slo_1.5')."""
        if name.startswith("slo_"):
            return self.slo_at(float(name.removeprefix("slo_")))
        value = getattr(self, name)
        if not isinstance(value, Estimate):
            raise ValueError(f"{name!r} is not an estimated metric")
        return value

    def seed_values(self, metric: str) -> tuple[float, ...]:
        """Per-seed values of 'utility' or 'slo_<scale>' (e.g. 'slo_1.5'), in seed order."""
        if metric == "utility":
            return self.seed_utilities
        if metric.startswith("slo_"):
            return self.seed_slo[SLO_SCALES.index(float(metric.removeprefix("slo_")))]
        raise ValueError(f"no per-seed values for {metric!r}")


def first_episodes(policy: Policy, cfg: SimConfig, seeds: Sequence[int]) -> list[EpisodeStats]:
    """Step one environment per seed until each has finished an episode; return the first ones."""
    sim = BatchedClusterSim(cfg, seeds)
    obs = sim.reset()
    first: dict[int, EpisodeStats] = {}
    # Every episode ends by max_decisions (truncation), so this bound is never reached by a sound sim.
    for _ in range(cfg.max_decisions + 1):
        result = sim.step(policy.act(obs))
        obs = result.obs
        if result.finished_envs.size:
            policy.episodes_ended(result.finished_envs)
        for env, stats in result.finished:
            first.setdefault(env, stats)
        if len(first) == len(seeds):
            return [first[e] for e in range(len(seeds))]
    raise RuntimeError(f"episodes did not end within max_decisions={cfg.max_decisions}")


def summarise(name: str, cfg: SimConfig, seeds: Sequence[int], episodes: Sequence[EpisodeStats]) -> EvalRow:
    def per_seed(metric: Callable[[EpisodeStats], float]) -> Estimate:
        return estimate([float(metric(e)) for e in episodes])

    return EvalRow(
        policy=name,
        nodes=cfg.n_servers,
        rate=cfg.arrival_rate,
        mode=cfg.mode,
        profile=cfg.profile_name,
        seeds=tuple(seeds),
        quality=per_seed(lambda e: e.mean_quality),
        response_s=per_seed(lambda e: e.mean_response_s),
        reload_rate=per_seed(lambda e: e.reload_rate),
        utility=per_seed(lambda e: e.utility),
        efficiency=per_seed(lambda e: e.mean_quality / e.mean_response_s),
        unserved=per_seed(lambda e: e.unserved),
        lower_bound_s=float(np.nanmean([e.lower_bound_s for e in episodes])),
        seed_utilities=tuple(float(e.utility) for e in episodes),
        response_to_floor=estimate(
            [response_to_floor(cfg, s, e) for s, e in zip(seeds, episodes, strict=True)]
        ),
        slo=tuple(per_seed(lambda e, s=scale: e.slo_attainment(s)) for scale in SLO_SCALES),
        seed_slo=tuple(tuple(e.slo_attainment(scale) for e in episodes) for scale in SLO_SCALES),
        goodput_per_min=per_seed(lambda e: e.goodput_per_min),
        tag=cfg.tag,
        class_attainment=(
            (per_seed(lambda e: e.class_attainment(0)), per_seed(lambda e: e.class_attainment(1)))
            if cfg.slo_classes is not None
            else (Estimate(math.nan, math.nan), Estimate(math.nan, math.nan))
        ),
    )


def response_to_floor(cfg: SimConfig, seed: int, episode: EpisodeStats) -> float:
    """An episode's mean response over the floor at its own mean quality; nan where the floor does not
    apply (warm mode, or tasks left unserved)."""
    if cfg.mode != "paper" or episode.launched == 0 or episode.launched < episode.arrived:
        return math.nan
    return episode.mean_response_s / seed_floor(cfg, seed, episode.mean_quality).mean_response_s


def paired_differences(row: EvalRow, baseline: EvalRow, metric: str = "utility") -> list[float]:
    """row's per-seed `metric` minus baseline's, seed by seed (the same workloads)."""
    if row.seeds != baseline.seeds or row.setting != baseline.setting:
        raise ValueError("a paired gap needs the same setting and the same seeds")
    mine, theirs = row.seed_values(metric), baseline.seed_values(metric)
    if len(mine) != len(row.seeds) or len(theirs) != len(baseline.seeds):
        raise ValueError(f"a paired gap needs the per-seed {metric} of both rows")
    return [a - b for a, b in zip(mine, theirs, strict=True)]


def paired_gap(row: EvalRow, baseline: EvalRow, metric: str = "utility") -> Estimate:
    """row's `metric` minus baseline's, paired seed by seed (the same workloads), with its 95% CI: the
    seeds' own spread cancels, so a gap this CI excludes 0 for is a real one on these workloads."""
    return estimate(paired_differences(row, baseline, metric))


def play(name: str, cfg: SimConfig, seeds: Sequence[int]) -> tuple[list[EpisodeStats], float, float]:
    """A policy as evaluations run it (prepared, then seeded from the run's first seed, so a run is
    reproducible): each seed's first episode, and the seconds spent preparing and playing."""
    policy = make_policy(name, cfg)
    start = time.perf_counter()
    policy.prepare()
    prepared = time.perf_counter()
    policy.begin(len(seeds), seeds[0])
    episodes = first_episodes(policy, cfg, seeds)
    return episodes, prepared - start, time.perf_counter() - prepared


def evaluate_policy(name: str, cfg: SimConfig, seeds: Sequence[int]) -> EvalRow:
    episodes, prepare_s, run_s = play(name, cfg, seeds)
    return replace(summarise(name, cfg, seeds, episodes), prepare_s=prepare_s, run_s=run_s)


def evaluate(
    policies: Sequence[str],
    settings: Sequence[SimConfig],
    seeds: Sequence[int],
    progress: Callable[[EvalRow], None] | None = None,
    skipped: Callable[[str, SimConfig], None] | None = None,
) -> list[EvalRow]:
    """Rows in setting order, policies in the given order within each setting. A policy that does not
    serve a setting (a shipped one trained for other sizes or another mode) is left out of it and
    reported to `skipped`."""
    rows = []
    for cfg in settings:
        for name in policies:
            if not policy_serves(name, cfg):
                if skipped is not None:
                    skipped(name, cfg)
                continue
            row = evaluate_policy(name, cfg, seeds)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


# ----- records: JSON and CSV -------------------------------------------------------------------------
def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return value if math.isfinite(value) else None


def row_record(row: EvalRow) -> dict[str, Any]:
    values: dict[str, Any] = {
        "policy": row.policy,
        "nodes": row.nodes,
        "rate": row.rate,
        "mode": row.mode,
        "profile": row.profile,
        "tag": row.tag,
        "seeds": list(row.seeds),
        "quality": row.quality.mean,
        "response_s": row.response_s.mean,
        "reload_rate": row.reload_rate.mean,
        "utility": row.utility.mean,
        "efficiency": row.efficiency.mean,
        "unserved": row.unserved.mean,
        "response_ci95": row.response_s.ci95,
        "utility_ci95": row.utility.ci95,
        "lower_bound_s": row.lower_bound_s,
        "ratio_to_lower_bound": row.ratio_to_lower_bound,
        "response_to_floor": row.response_to_floor.mean,
        "goodput_per_min": row.goodput_per_min.mean,
        "goodput_ci95": row.goodput_per_min.ci95,
        "deadline_met_interactive": row.class_attainment[0].mean,
        "deadline_met_batch": row.class_attainment[1].mean,
    }
    for scale, est in zip(SLO_SCALES, row.slo, strict=True):
        values[f"slo_{scale_label(scale)}"] = est.mean
        values[f"slo_{scale_label(scale)}_ci95"] = est.ci95
    record = {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in values.items()}
    record["wall_s"] = {"prepare": row.prepare_s, "run": row.run_s}
    return record


def write_json(rows: Sequence[EvalRow], path: Path, extra: dict[str, Any] | None = None) -> None:
    """{"rows": [...]} plus any `extra` top-level entries (e.g. the paired gaps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"rows": [row_record(r) for r in rows], **(extra or {})}
    path.write_text(json.dumps(document, indent=2) + "\n")


def _csv_fields(record: dict[str, Any]) -> dict[str, Any]:
    """One flat CSV row: nested values become dotted columns, the seed list one space-separated cell."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        elif isinstance(value, list):
            flat[key] = " ".join(map(str, value))
        else:
            flat[key] = "" if value is None else value
    return flat


def write_csv(rows: Sequence[EvalRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = [_csv_fields(row_record(r)) for r in rows]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]) if flat else [])
        writer.writeheader()
        writer.writerows(flat)


# ----- markdown tables -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableSpec:
    title: str
    cell: Callable[[EvalRow], str]


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _with_ci(est: Estimate, digits: int) -> str:
    if not math.isfinite(est.ci95):
        return _fmt(est.mean, digits)
    return f"{_fmt(est.mean, digits)} ± {_fmt(est.ci95, digits)}"


TABLES: tuple[TableSpec, ...] = (
    TableSpec("Quality (CLIP score, cf. Table IX)", lambda r: _fmt(r.quality.mean, 3)),
    TableSpec("Response time, s, mean ± 95% CI (cf. Table X)", lambda r: _with_ci(r.response_s, 1)),
    TableSpec("Reload rate (cf. Table XI)", lambda r: _fmt(r.reload_rate.mean, 3)),
    TableSpec("Utility (reward per task), mean ± 95% CI", lambda r: _with_ci(r.utility, 2)),
    TableSpec("Unserved tasks at the time limit", lambda r: _fmt(r.unserved.mean, 1)),
    TableSpec("Response time / lower bound", lambda r: _fmt(r.ratio_to_lower_bound, 2)),
    TableSpec(
        "Response time / hindsight floor at the policy's own quality (`eat floor`; paper mode)",
        lambda r: _with_ci(r.response_to_floor, 2),
    ),
    *(
        TableSpec(
            f"SLO attainment at {scale_label(scale)} the standalone time (share of arrived tasks; "
            "policy_models.slo)",
            lambda r, s=scale: _with_ci(r.slo_at(s), 3),
        )
        for scale in (1.0, 1.5)
    ),
    TableSpec(
        "Own deadlines met, interactive / batch tasks (SLO classes only)",
        lambda r: " / ".join(_fmt(e.mean, 3) for e in r.class_attainment),
    ),
    TableSpec(
        f"Goodput: tasks within {scale_label(GOODPUT_SCALE)} their standalone time per minute",
        lambda r: _with_ci(r.goodput_per_min, 2),
    ),
)


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def markdown_table(rows: Sequence[EvalRow], spec: TableSpec) -> str:
    """Rows = policies; columns = settings in the order the rows came (the suite's, or node count then
    rate for a grid)."""
    settings = _unique(r.setting for r in rows)
    policies = _unique(r.policy for r in rows)
    by_key = {(r.policy, r.setting): r for r in rows}
    header = ["Policy"] + [key.label for key in settings]
    lines = [f"### {spec.title}", "", _md_line(header), _md_line(["---"] + ["---:"] * len(settings))]
    for name in policies:
        found = [by_key.get((name, key)) for key in settings]
        cells = [spec.cell(row) if row is not None else "" for row in found]
        lines.append(_md_line([name, *cells]))
    return "\n".join(lines)


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_report(rows: Sequence[EvalRow]) -> str:
    return "\n\n".join(markdown_table(rows, spec) for spec in TABLES) + "\n"


def describe_run(seeds: Sequence[int], mode: str, profile: str) -> str:
    seed_text = f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return f"Evaluation: seeds {seed_text} ({len(seeds)} per setting), mode {mode}, profile {profile}"


# ----- plots -----------------------------------------------------------------------------------------
PLOTTED: tuple[tuple[str, str], ...] = (("response_s", "Response time (s)"), ("utility", "Utility"))


def write_plots(rows: Sequence[EvalRow], out_dir: Path) -> list[Path]:
    """One PNG per metric: a panel per node count, metric vs arrival rate, a line per policy."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    node_counts = sorted(_unique(r.nodes for r in rows))
    policies = _unique(r.policy for r in rows)
    paths = []
    for metric, label in PLOTTED:
        fig, axes = plt.subplots(1, len(node_counts), figsize=(4.5 * len(node_counts), 3.8), squeeze=False)
        for ax, nodes in zip(axes[0], node_counts, strict=True):
            _plot_panel(ax, [r for r in rows if r.nodes == nodes], policies, metric)
            ax.set_title(f"N = {nodes}")
            ax.set_xlabel("Arrival rate (tasks/s)")
            ax.set_ylabel(label)
        axes[0][0].legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_panel(ax: Any, rows: Sequence[EvalRow], policies: Sequence[str], metric: str) -> None:
    for name in policies:
        mine = sorted((r for r in rows if r.policy == name), key=lambda r: r.rate)
        estimates: list[Estimate] = [getattr(r, metric) for r in mine]
        errors = [e.ci95 if math.isfinite(e.ci95) else 0.0 for e in estimates]
        ax.errorbar(
            [r.rate for r in mine],
            [e.mean for e in estimates],
            yerr=errors,
            marker="o",
            capsize=3,
            label=name,
        )
