"""The `eat` command line. Thin wiring only: the work lives in policy_models.evaluation and services.bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from policy_models import evaluation
from policy_models.config import SimConfig
from policy_models.policies import policy_names
from policy_models.profiles import PROFILES
from services.bench import sim as sim_bench


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eat", description="EAT Serve: diffusion task scheduling.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_eval(commands)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    _add_bench_sim(bench)
    return parser


def _add_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="evaluate policies over settings and seeds (paper Tables IX-XI)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--preset", choices=["paper"], help="the paper's 15 settings")
    where.add_argument("--nodes", type=int, nargs="+", help="node counts (with --rates)")
    p.add_argument("--rates", type=float, nargs="+", help="arrival rates, tasks/s (with --nodes)")
    p.add_argument("--mode", choices=["paper", "warm"], default="paper")
    p.add_argument("--profile", choices=sorted(PROFILES), default="reference")
    p.add_argument("--policies", nargs="+", help="policy names (default: every registered policy)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per setting (default 5)")
    p.add_argument("--seed-base", type=int, default=evaluation.DEFAULT_SEED_BASE)
    p.add_argument("--json", type=Path, help="write rows as JSON here")
    p.add_argument("--csv", type=Path, help="write rows as CSV here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    p.set_defaults(handler=run_eval)


def _add_bench_sim(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("sim", help="simulator decisions/s, single env vs batched")
    p.add_argument("--nodes", type=int, nargs="+", default=list(sim_bench.DEFAULT_NODES))
    p.add_argument("--batches", type=int, nargs="+", default=list(sim_bench.DEFAULT_BATCHES))
    p.add_argument("--seconds", type=float, help=f"per measurement (default {sim_bench.DEFAULT_SECONDS})")
    p.add_argument("--quick", action="store_true", help=f"a smoke run: {sim_bench.QUICK_SECONDS}s default")
    p.add_argument("--seed", type=int, default=sim_bench.ACTION_SEED, help="action and env seed")
    p.add_argument("--json", type=Path, help="write the report here (default: print it)")
    p.set_defaults(handler=run_bench_sim)


def _eval_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[SimConfig]:
    if args.preset == "paper":
        if args.rates:
            parser.error("--rates goes with --nodes, not --preset")
        return evaluation.paper_settings(args.mode, args.profile)
    if not args.rates:
        parser.error("--nodes needs --rates")
    try:
        return evaluation.grid_settings(args.nodes, args.rates, args.mode, args.profile)
    except ValueError as err:
        parser.error(str(err))


def run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = _eval_settings(args, parser)
    names = args.policies or policy_names()
    unknown = sorted(set(names) - set(policy_names()))
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {policy_names()}")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    seeds = evaluation.default_seeds(args.seeds, args.seed_base)

    def progress(row: evaluation.EvalRow) -> None:
        # stderr, so stdout stays the report
        print(f"  {row.policy} N={row.nodes} rate={row.rate:g}: {row.run_s:.2f}s", file=sys.stderr)

    rows = evaluation.evaluate(names, settings, seeds, progress=progress)
    print(f"# {evaluation.describe_run(seeds, args.mode, args.profile)}\n")
    print(evaluation.markdown_report(rows))
    if args.json:
        evaluation.write_json(rows, args.json)
    if args.csv:
        evaluation.write_csv(rows, args.csv)
    if args.plots:
        evaluation.write_plots(rows, args.plots)
    return 0


def run_bench_sim(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be > 0")
    default_seconds = sim_bench.QUICK_SECONDS if args.quick else sim_bench.DEFAULT_SECONDS
    report = sim_bench.run_sim_bench(
        args.nodes, args.batches, args.seconds or default_seconds, seed=args.seed
    )
    print(sim_bench.format_table(report))
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    else:
        print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, parser)


if __name__ == "__main__":
    sys.exit(main())
