"""Paired comparisons: each policy against the best heuristic of each setting, seed by seed, and pooled
over the groups of a suite.

Two good policies differ by about ±1 utility per episode at N=8, so means over a few seeds decide
nothing. Every policy in a setting plays the same workloads (one per seed), so the per-seed difference
cancels the workload's own spread; its mean ± 95% CI is the claim. "The best heuristic" of a setting is
the heuristic (policies.is_heuristic) with the best mean utility there on the evaluation seeds
themselves: a choice made in hindsight, which favours the baseline, so a gap above it is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policy_models.evaluation import Estimate, EvalRow, SettingKey, estimate, paired_differences
from policy_models.policies import is_heuristic
from policy_models.slo import GOODPUT_SCALE, scale_label
from policy_models.suites import SettingGroup, Suite

SLO_METRIC = f"slo_{GOODPUT_SCALE:g}"  # the SLO attainment compared (policy_models.slo)
BEST = "best-heuristic"  # a baseline name: the best heuristic of each setting


@dataclass(frozen=True)
class Gap:
    """`policy` minus `baseline` in one setting or pooled over a group: utility and SLO attainment."""

    policy: str
    baseline: str
    scope: str  # a setting's label or a group's name
    utility: Estimate
    slo: Estimate
    samples: int

    def verdict(self) -> str:
        """▲ the utility CI lies above 0, ▼ below, = it spans 0."""
        return verdict_of(self.utility)

    def record(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "policy": self.policy,
            "baseline": self.baseline,
            "scope": self.scope,
            "utility_gap": clean(self.utility.mean),
            "utility_gap_ci95": clean(self.utility.ci95),
            f"slo_{scale_label(GOODPUT_SCALE)}_gap": clean(self.slo.mean),
            f"slo_{scale_label(GOODPUT_SCALE)}_gap_ci95": clean(self.slo.ci95),
            "samples": self.samples,
        }


def verdict_of(gap: Estimate) -> str:
    if not math.isfinite(gap.ci95):
        return "?"
    return "▲" if gap.mean - gap.ci95 > 0 else "▼" if gap.mean + gap.ci95 < 0 else "="


def rows_by_setting(rows: Sequence[EvalRow]) -> dict[SettingKey, list[EvalRow]]:
    grouped: dict[SettingKey, list[EvalRow]] = {}
    for row in rows:
        grouped.setdefault(row.setting, []).append(row)
    return grouped


def best_heuristic(rows: Sequence[EvalRow]) -> EvalRow | None:
    """The heuristic row with the best mean utility among `rows` (one setting); None without one."""
    heuristics = [r for r in rows if is_heuristic(r.policy)]
    return max(heuristics, key=lambda r: r.utility.mean) if heuristics else None


def baseline_row(rows: Sequence[EvalRow], baseline: str) -> EvalRow | None:
    """`baseline` by name in one setting's rows, or the best heuristic there for 'best-heuristic'."""
    if baseline == BEST:
        return best_heuristic(rows)
    found = [r for r in rows if r.policy == baseline]
    return found[0] if found else None


def setting_gaps(rows: Sequence[EvalRow], baseline: str = BEST) -> list[Gap]:
    """Every policy but the baseline itself against it, setting by setting."""
    gaps = []
    for key, here in rows_by_setting(rows).items():
        base = baseline_row(here, baseline)
        if base is None:
            continue
        for row in here:
            if row.policy != base.policy:
                gaps.append(_gap(row.policy, base.policy, key.label, [(row, base)]))
    return gaps


def pooled_gaps(rows: Sequence[EvalRow], suite: Suite, baseline: str = BEST) -> list[Gap]:
    """Each policy against the baseline over every seed of every setting of each group of `suite`
    (settings where the policy or the baseline has no row are left out of that policy's pool; where the
    policy is itself the best heuristic its differences are 0)."""
    by_setting = rows_by_setting(rows)
    policies = list(dict.fromkeys(r.policy for r in rows))
    gaps = []
    for group in suite.groups:
        for policy in policies:
            if policy == baseline:
                continue
            pairs = []
            for cfg in group.settings:
                here = by_setting.get(SettingKey.of(cfg), [])
                base = baseline_row(here, baseline)
                mine = [r for r in here if r.policy == policy]
                if base is not None and mine:
                    pairs.append((mine[0], base))
            if pairs:
                gaps.append(_gap(policy, baseline, group.name, pairs))
    return gaps


def _gap(policy: str, baseline: str, scope: str, pairs: Sequence[tuple[EvalRow, EvalRow]]) -> Gap:
    utility = [d for row, base in pairs for d in paired_differences(row, base, "utility")]
    slo = [d for row, base in pairs for d in paired_differences(row, base, SLO_METRIC)]
    return Gap(policy, baseline, scope, estimate(utility), estimate(slo), len(utility))


# ----- markdown ----------------------------------------------------------------------------------------
def gap_cell(gap: Estimate, digits: int = 2) -> str:
    if not math.isfinite(gap.mean):
        return "–"
    ci = f" ± {gap.ci95:.{digits}f}" if math.isfinite(gap.ci95) else ""
    return f"{verdict_of(gap)} {gap.mean:+.{digits}f}{ci}"


def setting_gap_table(rows: Sequence[EvalRow]) -> list[str]:
    """Utility minus the best heuristic's, paired per seed: a column per setting, a row per policy,
    and a last row naming the best heuristic of each setting."""
    by_setting = rows_by_setting(rows)
    keys = list(by_setting)
    gaps = {(g.policy, g.scope): g for g in setting_gaps(rows)}
    policies = list(dict.fromkeys(r.policy for r in rows))
    lines = [
        "| policy | " + " | ".join(k.label for k in keys) + " | above / tied / below |",
        "|---|" + "---:|" * len(keys) + "---:|",
    ]
    best = [best_heuristic(by_setting[k]) for k in keys]
    best_names = [b.policy if b is not None else "–" for b in best]
    for policy in policies:
        found = [gaps.get((policy, k.label)) for k in keys]
        if not any(found):
            continue
        cells = []
        for gap, name in zip(found, best_names, strict=True):
            cells.append(gap_cell(gap.utility) if gap else "best" if name == policy else "–")
        marks = [g.verdict() for g in found if g]
        tally = " / ".join(str(marks.count(m)) for m in "▲=▼")
        lines.append(f"| {policy} | " + " | ".join(cells) + f" | {tally} |")
    lines.append("| *best heuristic* | " + " | ".join(best_names) + " | |")
    return lines


def pooled_gap_table(rows: Sequence[EvalRow], suite: Suite, baselines: Sequence[str]) -> list[str]:
    """Per group of the suite, each policy's pooled utility gap (and SLO-attainment gap) against each
    baseline."""
    columns = [(group, base) for group in suite.groups for base in baselines]
    found = {(g.policy, g.scope, g.baseline): g for base in baselines for g in pooled_gaps(rows, suite, base)}
    header = [f"{group.name}: − {base}" for group, base in columns]
    lines = ["| policy | " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    for policy in dict.fromkeys(r.policy for r in rows):
        cells = []
        for group, base in columns:
            gap = found.get((policy, group.name, base))
            cells.append(
                f"{gap_cell(gap.utility)} (SLO {gap.slo.mean:+.3f})" if gap and gap.samples > 1 else "–"
            )
        if any(c != "–" for c in cells):
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines


def rows_in_group(rows: Sequence[EvalRow], group: SettingGroup) -> list[EvalRow]:
    keys = {SettingKey.of(cfg) for cfg in group.settings}
    return [r for r in rows if r.setting in keys]


def comparison_report(rows: Sequence[EvalRow], suite: Suite | None) -> str:
    """The markdown `eat eval` prints after its tables: the per-setting gaps (a table per group of a
    suite), then the pooled gaps per group."""
    lines = [
        "### Utility minus the best heuristic's, paired per seed (mean ± 95% CI)",
        "",
        "▲ the CI lies above 0, ▼ below, = it spans 0. The best heuristic of a setting is picked on these "
        "seeds (policy_models.paired).",
        "",
    ]
    if suite is None or len(suite.groups) == 1:
        lines += setting_gap_table(rows)
    else:
        for group in suite.groups:
            lines += [
                f"**{group.name}** ({group.description})",
                "",
                *setting_gap_table(rows_in_group(rows, group)),
                "",
            ]
    if suite is not None:
        lines += [
            "",
            f"### Pooled over each group of the `{suite.name}` suite: utility gap (and SLO attainment gap "
            f"at {scale_label(GOODPUT_SCALE)}), every seed of every setting",
            "",
            *(f"- **{g.name}**: {g.description}" for g in suite.groups),
            "",
            *pooled_gap_table(rows, suite, ("reuse", BEST)),
        ]
    return "\n".join(lines) + "\n"
