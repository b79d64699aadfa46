"""The `eat` command line. Thin wiring only: the work lives in policy_models.evaluation and services.bench."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from policy_models import evaluation, paired, suites
from policy_models.config import PAPER_SETTINGS, SimConfig
from policy_models.policies import is_known_policy, policy_names
from policy_models.profiles import PROFILES, get_profile, load_profile
from policy_models.shipped import SHIPPED_ROOT
from services import stack_cli
from services.bench import sim as sim_bench
from services.common.certs import add_certs_command
from services.device.cli import add_device as _add_device
from services.offload.submit import add_personal as _add_personal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eat", description="EAT Serve: diffusion task scheduling.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_eval(commands)
    _add_train(commands)
    _add_label(commands)
    _add_lookahead(commands)
    _add_floor(commands)
    _add_tune(commands)
    _add_reports(commands)
    _add_models(commands)
    _add_calibrate(commands)
    stack_cli.add_commands(commands)
    add_certs_command(commands)
    _add_demo(commands)
    _add_device(commands)
    _add_personal(commands)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    _add_bench_sim(bench)
    _add_bench_pipeline(bench)
    _add_bench_executor(bench)
    _add_bench_quality(bench)
    _add_bench_hybrid(bench)
    return parser


def _add_setting_arguments(
    p: argparse.ArgumentParser, modes: bool = True, presets: Sequence[str] = ("paper",)
) -> None:
    """--preset or --nodes with --rates (and --mode): the settings `_eval_settings` builds."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--preset",
        choices=list(presets),
        help="paper: the paper's 15 settings"
        + ("; shift: Table VI timings, warm mode, unseen sizes, other rates (policy_models.suites)"
           if "shift" in presets else ""),
    )  # fmt: skip
    where.add_argument("--nodes", type=int, nargs="+", help="node counts (with --rates)")
    p.add_argument("--rates", type=float, nargs="+", help="arrival rates, tasks/s (with --nodes)")
    if modes:
        p.add_argument("--mode", choices=["paper", "warm"], default="paper")
    else:
        p.set_defaults(mode="paper")
    p.set_defaults(profile="reference")  # commands with --profile override it


def _add_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="evaluate policies over settings and seeds (paper Tables IX-XI)")
    _add_setting_arguments(p, presets=suites.PRESETS)
    p.add_argument("--profile", default="reference", help=f"{sorted(PROFILES)} or one in --profile-file")
    p.add_argument("--profile-file", type=Path, help="a profile JSON (eat calibrate --out) to register first")
    p.add_argument("--policies", nargs="+", help="policy names (default: every registered policy)")
    p.add_argument(
        "--seeds",
        type=int,
        default=suites.DEFAULT_EVAL_SEEDS,
        help=f"seeds per setting (default {suites.DEFAULT_EVAL_SEEDS}: two good policies differ by about "
        "±1 utility per episode, so fewer decide little)",
    )
    p.add_argument("--seed-base", type=int, default=evaluation.DEFAULT_SEED_BASE, help="first seed")
    p.add_argument("--json", type=Path, help="write rows and paired gaps as JSON here")
    p.add_argument("--csv", type=Path, help="write rows as CSV here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    p.set_defaults(handler=run_eval)


# policy_models.learning.agents.ALGORITHMS plus "ppo", spelled out so that `eat eval` does not load torch.
TRAIN_ALGORITHMS = ("eat", "eat-a", "eat-d", "eat-da", "lad-ts", "ppo")
# The paper's training arrival rate per node count (Section VI-A2).
PAPER_TRAIN_RATES = {4: 0.05, 8: 0.10, 12: 0.15}


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="train a learned scheduler (SAC family: EAT, ablations, LAD-TS; or PPO)"
    )
    p.add_argument("--algo", choices=TRAIN_ALGORITHMS, help="default eat (or the resumed run's)")
    p.add_argument("--nodes", type=int, nargs="+", help="node counts; several = cross-size training")
    p.add_argument(
        "--rate", type=float, nargs="+", help="arrival rate, one or one per node count (default: paper's)"
    )
    p.add_argument(
        "--paper-rates",
        action="store_true",
        help="train on all five of the paper's arrival rates for each node count (one cluster config each)",
    )
    p.add_argument("--mode", choices=["paper", "warm"], default="paper")
    p.add_argument("--profile", default="reference", help=f"{sorted(PROFILES)} or one in --profile-file")
    p.add_argument("--profile-file", type=Path, help="a profile JSON (eat calibrate --out) to register first")
    p.add_argument("--steps", type=int, default=200_000, help="environment steps, summed over envs")
    p.add_argument("--envs", type=int, default=64, help="parallel environments per cluster config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/train"), help="logs and checkpoints go here")
    p.add_argument("--eval-every", type=int, default=20_000, help="steps between evaluations (0: end only)")
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="steps between checkpoints")
    p.add_argument("--warmup", type=int, default=5_000, help="steps of random actions before updates")
    p.add_argument(
        "--preset",
        choices=["paper", "cpu-fast"],
        default="paper",
        help="SAC family: agent hyperparameters (paper: Tables VII-VIII; cpu-fast: small nets, batch "
        "128, 5 denoising steps, learned alpha, 3-step returns, for ~30 min on a CPU)",
    )
    p.add_argument("--minutes", type=float, help="stop after this much wall time")
    p.add_argument(
        "--eval-seeds",
        type=int,
        default=5,
        choices=range(1, 501),
        metavar="K",
        help="validation workloads 500..499+K (default 5; evaluation's test seeds start at 1000)",
    )
    p.add_argument("--batch-size", type=int, help="SAC batch (default 512)")
    p.add_argument("--updates-per-step", type=float, help="gradient updates per environment step")
    p.add_argument("--rollout-steps", type=int, help="PPO: batched steps per rollout (default 128)")
    p.add_argument(
        "--teacher",
        choices=["reuse", "greedy", "fifo"],
        help="SAC family: a heuristic whose noisy actions fill the warm-up and that the actor imitates",
    )
    p.add_argument(
        "--hint",
        choices=["reuse", "greedy", "fifo"],
        help="SAC family: the network also reads this heuristic's action on each state (learning.hints)",
    )
    p.add_argument(
        "--residual",
        action="store_true",
        help="with --hint: the actor outputs a correction to the hint's action (diffusion actors)",
    )
    p.add_argument(
        "--residual-deadzone",
        type=float,
        help="with --residual: corrections within this of 0 leave the hint's action as it is (default 0)",
    )
    p.add_argument(
        "--no-q-filter",
        action="store_true",
        help="imitation term everywhere in fine-tuning, not only where the critic prefers the teacher",
    )
    p.add_argument("--teacher-noise", type=float, default=0.1, help="std of the warm-up noise on its actions")
    p.add_argument("--pretrain-updates", type=int, default=0, help="imitation updates after the warm-up")
    p.add_argument("--pretrain-lr", type=float, help="actor learning rate in pretraining (default: actor's)")
    p.add_argument(
        "--demos",
        type=Path,
        help="SAC family: pretrain on these demonstrations (`eat label`) instead of the teacher's actions",
    )
    p.add_argument(
        "--demo-deviation-copies",
        type=int,
        default=1,
        help="with --demos: steps where the teacher left its base policy count this many times",
    )
    p.add_argument(
        "--pretrain-eval-every",
        type=int,
        default=0,
        help="validate every N pretraining updates (0: at the end)",
    )
    p.add_argument("--bc-weight", type=float, help="Q-filtered imitation weight in fine-tuning, x mean |Q|")
    p.add_argument("--diffusion-steps", type=int, help="SAC family: denoising steps of the diffusion actor")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint or a run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_train)


def _train_configs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[SimConfig]:
    if args.paper_rates:  # every paper rate of every node count: one cluster config each
        if args.rate:
            parser.error("give --rate or --paper-rates, not both")
        by_nodes = {n: rates for n, _, rates in PAPER_SETTINGS}
        if any(n not in by_nodes for n in args.nodes):
            parser.error(f"--paper-rates needs node counts of the paper's settings: {sorted(by_nodes)}")
        args.rate = [r for n in args.nodes for r in by_nodes[n]]
        args.nodes = [n for n in args.nodes for _ in by_nodes[n]]
    rates = args.rate or [PAPER_TRAIN_RATES.get(n, math.nan) for n in args.nodes]
    if len(rates) == 1:
        rates = rates * len(args.nodes)
    if len(rates) != len(args.nodes) or not all(math.isfinite(r) for r in rates):
        parser.error("give --rate once, or once per --nodes value (paper rates exist for 4, 8, 12 nodes)")
    try:
        return [
            evaluation.make_setting(n, r, args.mode, args.profile)
            for n, r in zip(args.nodes, rates, strict=True)
        ]
    except ValueError as err:
        parser.error(str(err))


def run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # Imported here: torch and TensorBoard load only for training.
    from policy_models.checkpoints import CheckpointError
    from policy_models.learning.agents import checkpoint_algorithm

    _register_profile_file(args, parser)
    algorithm = args.algo or (checkpoint_algorithm(args.resume) if args.resume else "eat")
    build = _ppo_run if algorithm == "ppo" else _sac_run
    run, settings = build(args, parser, algorithm)
    try:
        result = run(settings)
    except CheckpointError as err:  # a resume that does not fit these settings
        print(f"eat train: {err}", file=sys.stderr)
        return 2
    first, last = settings.eval_seeds[0], settings.eval_seeds[-1]
    print(f"trained {algorithm}: {result.env_steps} env steps, {result.updates} updates")
    print(f"  {result.env_steps_per_s:.0f} env steps/s, {result.updates_per_s:.1f} updates/s")
    print(f"  logs: {result.tensorboard_dir} (TensorBoard), {result.csv_path}")
    print(f"  checkpoints: {result.final_checkpoint} (final), {result.best_checkpoint} (best)")
    print(
        f"  eval utility (deterministic policy, validation seeds {first}..{last}): "
        f"final {result.final_eval_utility:.3f}, best {result.best_eval_utility:.3f}"
    )
    return 0


def _run_settings(args: argparse.Namespace, configs: list[SimConfig]) -> dict[str, Any]:
    """Settings shared by the SAC family's and PPO's training runs."""
    return dict(
        sim=tuple(configs),
        total_steps=args.steps,
        n_envs=args.envs,
        seed=args.seed,
        out_dir=args.out,
        eval_every=args.eval_every,
        eval_seeds=tuple(range(500, 500 + args.eval_seeds)),
        checkpoint_every=args.checkpoint_every,
        resume_from=args.resume,
        progress=not args.no_progress,
    )


def _sac_run(
    args: argparse.Namespace, parser: argparse.ArgumentParser, algorithm: str
) -> tuple[Callable[[Any], Any], Any]:
    from policy_models.learning.agents import AgentConfig
    from policy_models.learning.train import (
        TrainSettings,
        checkpoint_teacher,
        train,
        training_setup_from_checkpoint,
    )

    teacher = args.teacher
    if args.resume is not None:  # as the checkpoint was trained, unless told otherwise (then checked)
        agent, saved_configs = training_setup_from_checkpoint(args.resume)
        teacher = teacher or checkpoint_teacher(args.resume)
        agent = dataclasses.replace(agent, algorithm=algorithm)
        configs = _train_configs(args, parser) if args.nodes else list(saved_configs)
    elif args.nodes is None:
        parser.error("--nodes is required (unless resuming)")
    else:
        preset = AgentConfig.cpu_fast if args.preset == "cpu-fast" else AgentConfig.paper
        agent, configs = preset(algorithm), _train_configs(args, parser)
    overrides = {
        "batch_size": args.batch_size,
        "updates_per_step": args.updates_per_step,
        "bc_weight": args.bc_weight,
        "diffusion_steps": args.diffusion_steps,
        "hint": args.hint,
        "residual": args.residual or None,
        "residual_deadzone": args.residual_deadzone,
        "q_filter": False if args.no_q_filter else None,
    }
    try:
        agent = dataclasses.replace(agent, **{k: v for k, v in overrides.items() if v is not None})
        time_limit = None if args.minutes is None else 60.0 * args.minutes
        settings = TrainSettings(
            agent=agent,
            warmup_steps=args.warmup,
            time_limit_s=time_limit,
            teacher=teacher,
            teacher_noise=args.teacher_noise,
            pretrain_updates=args.pretrain_updates,
            pretrain_lr=args.pretrain_lr,
            demos=args.demos,
            demo_deviation_copies=args.demo_deviation_copies,
            pretrain_eval_every=args.pretrain_eval_every,
            **_run_settings(args, configs),
        )
    except ValueError as err:
        parser.error(str(err))
    return train, settings


def _ppo_run(
    args: argparse.Namespace, parser: argparse.ArgumentParser, algorithm: str
) -> tuple[Callable[[Any], Any], Any]:
    from policy_models.learning.ppo import PPOConfig, PPOSettings, ppo_setup_from_checkpoint, train_ppo

    if args.hint is not None or args.residual:
        parser.error("--hint and --residual are for the SAC family (eat, eat-a, eat-d, eat-da, lad-ts)")
    if args.resume is not None:
        agent, saved_configs = ppo_setup_from_checkpoint(args.resume)
        configs = _train_configs(args, parser) if args.nodes else list(saved_configs)
    elif args.nodes is None:
        parser.error("--nodes is required (unless resuming)")
    else:
        agent, configs = PPOConfig(), _train_configs(args, parser)
    try:
        if args.rollout_steps is not None:
            agent = dataclasses.replace(agent, rollout_steps=args.rollout_steps)
        time_limit = None if args.minutes is None else 60.0 * args.minutes
        settings = PPOSettings(agent=agent, time_limit_s=time_limit, **_run_settings(args, configs))
    except ValueError as err:
        parser.error(str(err))
    return train_ppo, settings


def _add_label(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "label", help="record demonstrations: the rollout teacher (lookahead over a heuristic) plays episodes"
    )
    p.add_argument("--nodes", type=int, nargs="+", required=True, help="node counts")
    p.add_argument("--rate", type=float, nargs="+", help="arrival rate, one or one per node count")
    p.add_argument("--paper-rates", action="store_true", help="all five paper rates for each node count")
    p.add_argument("--mode", choices=["paper", "warm"], default="paper")
    p.add_argument("--profile", choices=sorted(PROFILES), default="reference")
    p.add_argument("--episodes", type=int, default=20, help="episodes per cluster config")
    p.add_argument(
        "--first-seed",
        type=int,
        default=100_000,
        help="workload seeds: config i plays first+i*episodes onwards (validation is 500+, tests 1000+)",
    )
    p.add_argument("--base", choices=["reuse", "greedy", "fifo"], default="reuse", help="policy improved on")
    p.add_argument("--samples", type=int, default=16, help="simulated futures per candidate action")
    p.add_argument("--z", type=float, default=2.0, help="standard errors a gain needs to leave the base")
    p.add_argument(
        "--steps-only",
        action="store_true",
        help="search only the base decision's step count (no waiting instead, no other task)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes, one cluster config at a time each")
    p.add_argument("--out", type=Path, required=True, help="directory for the demonstration files")
    p.set_defaults(handler=run_label)


def _add_floor(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "floor",
        help="a hindsight floor on mean response: no schedule serving every task at the quality beats it",
    )
    _add_setting_arguments(p, modes=False)
    p.add_argument("--quality", type=float, default=0.26, help="mean quality every schedule must reach")
    p.add_argument("--seeds", type=int, default=10, help="seeds per setting (default 10)")
    p.add_argument("--seed-base", type=int, default=evaluation.DEFAULT_SEED_BASE)
    p.add_argument(
        "--against",
        nargs="+",
        metavar="POLICY",
        help="also play these policies and report their response over the floor at their own quality",
    )
    p.set_defaults(handler=run_floor)


def run_floor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from policy_models.bounds import setting_floors

    configs = _eval_settings(args, parser)
    seeds = evaluation.default_seeds(args.seeds, args.seed_base)
    quality, first, last = args.quality, seeds[0], seeds[-1]
    print(f"hindsight floor on mean response (s) at mean quality >= {quality:g}, seeds {first}-{last}")
    print("| N | λ | floor (95% CI) | wait + init | run |\n|---|---|---:|---:|---:|")
    for cfg in configs:
        try:
            floors = setting_floors(cfg, seeds, args.quality)
        except ValueError as err:
            parser.error(str(err))
        total = evaluation.estimate([f.mean_response_s for f in floors])
        wait_init = sum(f.wait_init_s / f.tasks for f in floors) / len(floors)
        run = sum(f.run_s / f.tasks for f in floors) / len(floors)
        print(
            f"| {cfg.n_servers} | {cfg.arrival_rate:g} | {total.mean:.1f} ± {total.ci95:.1f} | "
            f"{wait_init:.1f} | {run:.1f} |"
        )
    if args.against:
        _floor_against(configs, seeds, args.against, parser)
    return 0


def _floor_against(
    configs: Sequence[SimConfig],
    seeds: Sequence[int],
    policies: Sequence[str],
    parser: argparse.ArgumentParser,
) -> None:
    """Each policy's response over the floor at its own quality, episode by episode: the floor is
    sound only if no ratio is below 1."""
    for name in policies:
        if not is_known_policy(name):
            parser.error(f"unknown policy {name!r}")
    ratios = []
    for cfg in configs:
        for name in policies:
            episodes, _, _ = evaluation.play(name, cfg, seeds)
            ratios += [
                (
                    evaluation.response_to_floor(cfg, seed, episode),
                    cfg.n_servers,
                    cfg.arrival_rate,
                    name,
                    seed,
                )
                for seed, episode in zip(seeds, episodes, strict=True)
            ]
    played = [r for r in ratios if math.isfinite(r[0])]
    ratio, nodes, rate, name, seed = min(played)
    print(
        f"\nresponse / floor at the policy's own quality over {len(played)} episodes "
        f"({len(ratios) - len(played)} left tasks unserved): least {ratio:.3f} "
        f"({name}, N={nodes} λ={rate:g}, seed {seed})"
    )


def _add_tune(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "tune", help="re-tune the reuse heuristic's knobs for a suite (the policy reuse:<suite> plays them)"
    )
    p.add_argument("--preset", choices=list(suites.PRESETS), required=True, help="the suite to tune for")
    p.add_argument(
        "--seeds", type=int, default=64, help="tuning seeds 0.. (default 64; evaluation uses 1000..)"
    )
    p.add_argument(
        "--root", type=Path, default=None, help="where to write reuse-<suite>.json (default: shipped)"
    )
    p.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from policy_models import tuning
    from policy_models.policies.tuned import TUNED_ROOT

    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    seeds = tuple(range(args.seeds))
    settings = suites.suite(args.preset).settings
    print(f"tuning reuse on {len(settings)} settings of {args.preset}, seeds 0..{seeds[-1]}", file=sys.stderr)
    result = tuning.tune_reuse(settings, seeds, progress=lambda line: print(f"  {line}", file=sys.stderr))
    path = tuning.save_tuned(result, args.preset, seeds, args.root or TUNED_ROOT)
    print(
        f"{path}: utility {result.start_utility:.4f} -> {result.utility:.4f} on the tuning seeds "
        f"({result.evaluations} evaluations); knobs {dataclasses.asdict(result.knobs)}"
    )
    return 0


def _add_lookahead(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "lookahead",
        help="how much the rollout teacher (lookahead over a heuristic) gains over it, seed by seed",
    )
    _add_setting_arguments(p)
    p.add_argument("--seeds", type=int, default=5, help="evaluation seeds 1000.. (default 5)")
    p.add_argument("--base", choices=["reuse", "greedy", "fifo"], default="reuse")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--z", type=float, default=2.0)
    p.add_argument("--steps-only", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the per-seed utilities here")
    p.set_defaults(handler=run_lookahead)


def run_lookahead(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from concurrent.futures import ProcessPoolExecutor

    from policy_models.learning.rollout import RolloutSettings

    configs = _eval_settings(args, parser)
    settings = RolloutSettings(samples=args.samples, z=args.z, task_changes=not args.steps_only)
    seeds = list(evaluation.default_seeds(args.seeds))
    print(f"rollout over {args.base} ({settings.to_dict()}), seeds {seeds[0]}-{seeds[-1]}: paired gaps")
    print("| N | λ | teacher | " + args.base + " | gap (95% CI) |\n|---|---|---:|---:|---:|")
    records = []
    with ProcessPoolExecutor(max_workers=max(args.workers, 1)) as pool:
        jobs = [pool.submit(_lookahead_one, cfg, seeds, args.base, settings) for cfg in configs]
        for cfg, job in zip(configs, jobs, strict=True):
            teacher, base = job.result()
            gap = evaluation.estimate([t - b for t, b in zip(teacher, base, strict=True)])
            print(
                f"| {cfg.n_servers} | {cfg.arrival_rate:g} | {sum(teacher) / len(seeds):.4f} | "
                f"{sum(base) / len(seeds):.4f} | {gap.mean:+.4f} ± {gap.ci95:.4f} |",
                flush=True,
            )
            records.append(
                {
                    "nodes": cfg.n_servers,
                    "rate": cfg.arrival_rate,
                    "seeds": seeds,
                    "teacher_utility": teacher,
                    "base_utility": base,
                }
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rollout": settings.to_dict(), "base": args.base, "rows": records}))
    return 0


def _lookahead_one(
    cfg: SimConfig, seeds: list[int], base: str, settings: Any
) -> tuple[list[float], list[float]]:
    import numpy as np

    from policy_models.learning.demos import base_episode_utility, teacher_episode
    from policy_models.policies import make_policy

    policy = make_policy(base, cfg)
    teacher = [teacher_episode(cfg, s, policy, settings, np.random.default_rng(s))[1] for s in seeds]
    return teacher, [base_episode_utility(cfg, s, policy) for s in seeds]


def run_label(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from concurrent.futures import ProcessPoolExecutor

    from policy_models.learning.rollout import RolloutSettings

    args.rate = args.rate if args.rate or args.paper_rates else None
    configs = _train_configs(args, parser)
    try:
        settings = RolloutSettings(samples=args.samples, z=args.z, task_changes=not args.steps_only)
    except ValueError as err:
        parser.error(str(err))
    jobs = [
        (cfg, list(range(args.first_seed + i * args.episodes, args.first_seed + (i + 1) * args.episodes)))
        for i, cfg in enumerate(configs)
    ]
    with ProcessPoolExecutor(max_workers=max(args.workers, 1)) as pool:
        futures = [pool.submit(_label_one, cfg, seeds, args.base, settings, args.out) for cfg, seeds in jobs]
        for future in futures:
            print(future.result(), flush=True)
    return 0


def _label_one(cfg: SimConfig, seeds: list[int], base: str, settings: Any, out: Path) -> str:
    from policy_models.learning import demos
    from policy_models.policies import make_policy

    recorded = demos.record(cfg, seeds, make_policy(base, cfg), settings, base)
    stem = demos.save(recorded, out)
    teacher, base_u = recorded.meta["teacher_utility"], recorded.meta["base_utility"]
    gain = sum(t - b for t, b in zip(teacher, base_u, strict=True)) / len(seeds)
    return (
        f"{stem.name}: {len(recorded)} steps, teacher left {base} on {recorded.deviation_share:.1%}; "
        f"utility {sum(teacher) / len(seeds):.4f} vs {base} {sum(base_u) / len(seeds):.4f} "
        f"(gain {gain:+.4f}), {recorded.meta['wall_s']:.0f} s"
    )


def _add_reports(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("ship", help="ship a training run's best checkpoint with its card")
    p.add_argument("run", type=Path, help="a training run directory (holding best/ and metrics.csv)")
    p.add_argument("--name", required=True, help="directory name under policy_models/checkpoints/")
    p.add_argument("--row", required=True, help="the docs/results.md row it fills, e.g. eat")
    p.add_argument("--note", default="", help="a sentence to add to its card")
    p.add_argument("--root", type=Path, default=SHIPPED_ROOT, help="shipped policies")
    p.set_defaults(handler=run_ship)
    p = commands.add_parser("results", help="write docs/results.md (every policy beside the paper)")
    p.add_argument("--out", type=Path, default=Path("docs/results.md"), help="the document to write")
    p.add_argument(
        "--seeds",
        type=int,
        default=suites.DEFAULT_EVAL_SEEDS,
        help=f"evaluation seeds per setting (default {suites.DEFAULT_EVAL_SEEDS})",
    )
    p.add_argument("--seed-base", type=int, default=evaluation.DEFAULT_SEED_BASE, help="first seed")
    p.add_argument("--root", type=Path, default=SHIPPED_ROOT, help="shipped policies")
    p.add_argument("--no-suites", action="store_true", help="leave out the shift and hard suites (faster)")
    p.set_defaults(handler=run_results)


def run_ship(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.reports.results import ship

    target = ship(args.run, args.name, args.row, args.note, root=args.root)
    print(f"shipped {args.run} as {target}:")
    print((target / "CARD.md").read_text().strip())
    return 0


def run_results(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.reports.results import write_results

    if args.seeds < 2:
        parser.error("--seeds must be >= 2 (95% intervals)")
    seeds = evaluation.default_seeds(args.seeds, args.seed_base)
    out = write_results(args.out, seeds, root=args.root, suites=not args.no_suites)
    print(f"wrote {out}")
    return 0


def _add_models(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model directories for diffusers executors")
    actions = models.add_subparsers(dest="models", required=True)
    p = actions.add_parser("make-tiny", help="a tiny Stable Diffusion pipeline with seeded random weights")
    p.add_argument("dir", type=Path, help="the model directory to write, e.g. models/tiny")
    p.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same weights)")
    p.add_argument("--force", action="store_true", help="replace the directory if it exists")
    p.set_defaults(handler=run_models_make_tiny)
    p = actions.add_parser(
        "train-judge", help="train the tiny world's judge (reads a scene back from its image)"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write it (default: the shipped judge)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the shipped recipe's)")
    p.add_argument("--images", type=int, default=None, help="training images (default: the shipped recipe's)")
    p.set_defaults(handler=run_models_train_judge)
    p = actions.add_parser(
        "train-scorer", help="train the tiny world's open_clip scorer (the evaluator's CLIP)"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write it (default: the shipped scorer)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    p.set_defaults(handler=run_models_train_scorer)
    p = actions.add_parser("train-vae", help="train the tiny world's autoencoder (32 px <-> 16x16x4 latents)")
    p.add_argument("--out", type=Path, default=None, help="where to write it (default: the shipped one)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    p.set_defaults(handler=run_models_train_vae)
    p = actions.add_parser(
        "train-tiny",
        help="train the tiny world's text-to-image pipeline (autoencoder, text encoder, UNet)",
    )
    p.add_argument("--out", type=Path, default=None, help="pipeline directory (default: the shipped one)")
    p.add_argument("--reuse-vae", type=Path, default=None, metavar="DIR", help="reuse this autoencoder")
    p.add_argument("--vae-steps", type=int, default=None, help="autoencoder steps (default: the recipe's)")
    p.add_argument("--text-steps", type=int, default=None, help="text encoder steps (default: the recipe's)")
    p.add_argument("--unet-steps", type=int, default=None, help="UNet steps (default: the recipe's)")
    p.add_argument(
        "--eval-every", type=int, default=0, help="judge samples every N UNet steps (0: at the end)"
    )
    p.set_defaults(handler=run_models_train_tiny)
    p = actions.add_parser(
        "train-style-judge", help="train the classifier that reads a tiny-world image's style"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write it (default: the shipped one)")
    p.set_defaults(handler=run_models_train_style_judge)
    p = actions.add_parser(
        "make-personal", help="train a user's personal model: a LoRA adapter on the tiny world's pipeline"
    )
    p.add_argument("--user", required=True, help="the user's id (names the adapter)")
    p.add_argument("--style", required=True, help="outline, striped, pastel, shadow or plain")
    p.add_argument("--out", type=Path, required=True, help="the adapter directory to write")
    p.add_argument("--base", type=Path, default=None, help="base pipeline directory (default: shipped)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument(
        "--eval-prompts", type=int, default=40, help="validation prompts the card's fidelity is measured on"
    )
    p.set_defaults(handler=run_models_make_personal)


def with_steps(recipe: Any, steps: int | None, parser: argparse.ArgumentParser, flag: str = "--steps") -> Any:
    """A training recipe with `steps` instead of its own (None keeps them); they must exceed its warm-up."""
    recipe = recipe if steps is None else dataclasses.replace(recipe, steps=steps)
    if recipe.steps <= recipe.warmup:
        parser.error(f"{flag} must exceed the warm-up ({recipe.warmup})")
    return recipe


def run_models_make_tiny(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.executor.tiny import make_tiny  # torch and diffusers load only for this command

    try:
        out = make_tiny(args.dir, args.seed, overwrite=args.force)
    except FileExistsError as err:
        parser.error(str(err))
    print(f"wrote a tiny Stable Diffusion pipeline (seed {args.seed}) to {out}")
    return 0


def run_models_train_judge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.judge import JudgeRecipe, train_judge
    from tinyworld.weights import JUDGE_DIR, write_card

    recipe = JudgeRecipe()
    overrides = {"epochs": args.epochs, "train_images": args.images}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    if recipe.epochs < 1 or recipe.train_images < recipe.batch:
        parser.error(f"need --epochs >= 1 and --images >= {recipe.batch}")
    torch.set_num_threads(2)
    judge, card = train_judge(recipe, progress=lambda line: print(f"  {line}", file=sys.stderr))
    out = args.out or JUDGE_DIR
    judge.save(out, card)
    write_card(out, "judge", card)
    accuracy = ", ".join(f"{name} {value:.3f}" for name, value in card["validation_accuracy"].items())
    print(f"wrote {out}: validation accuracy {accuracy}; {card['train_s']:.0f} s")
    return 0


def run_models_train_scorer(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.scorer import ScorerRecipe, save_scorer, train_scorer
    from tinyworld.weights import SCORER_DIR, write_card

    recipe = with_steps(ScorerRecipe(), args.steps, parser)
    torch.set_num_threads(2)
    model, card = train_scorer(recipe, progress=lambda line: print(f"  {line}", file=sys.stderr))
    out = args.out or SCORER_DIR
    save_scorer(model, out, card)
    write_card(out, "scorer", card)
    print(
        f"wrote {out}: own caption first in {card['own_caption_ranked_first']:.3f} of held-out scenes "
        f"(score {card['own_caption_score']:.3f} vs {card['one_off_caption_score']:.3f} one attribute off); "
        f"{card['train_s']:.0f} s"
    )
    return 0


def run_models_train_vae(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.judge import Judge
    from tinyworld.vae import VaeRecipe, save_vae, train_vae
    from tinyworld.weights import JUDGE_DIR, VAE_DIR, write_card

    recipe = with_steps(VaeRecipe(), args.steps, parser)
    torch.set_num_threads(2)
    judge = Judge.load(JUDGE_DIR)
    vae, card = train_vae(recipe, judge, progress=lambda line: print(f"  {line}", file=sys.stderr))
    out = args.out or VAE_DIR
    save_vae(vae, out)
    write_card(out, "vae", card)
    judged = ", ".join(f"{name} {value:.3f}" for name, value in card["judge_round_trip"].items())
    print(
        f"wrote {out}: PSNR {card['psnr_db']:.1f} dB; judge on round trips {judged}; {card['train_s']:.0f} s"
    )
    return 0


def tiny_recipe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:  # a TinyRecipe
    from tinyworld.text_encoder import TextEncoderRecipe
    from tinyworld.text_to_image import TinyRecipe, UnetRecipe
    from tinyworld.vae import VaeRecipe

    vae = None if args.reuse_vae else with_steps(VaeRecipe(), args.vae_steps, parser, "--vae-steps")
    text = with_steps(TextEncoderRecipe(), args.text_steps, parser, "--text-steps")
    return TinyRecipe(vae, text, with_steps(UnetRecipe(), args.unet_steps, parser, "--unet-steps"))


def run_models_train_tiny(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.judge import Judge
    from tinyworld.text_to_image import save_pipeline, train_tiny
    from tinyworld.weights import JUDGE_DIR, PIPELINE_DIR, write_card

    recipe = tiny_recipe(args, parser)
    torch.set_num_threads(2)
    say = lambda line: print(f"  {line}", file=sys.stderr)  # noqa: E731
    pipeline, card = train_tiny(recipe, args.reuse_vae, Judge.load(JUDGE_DIR), say, args.eval_every)
    out = args.out or PIPELINE_DIR
    save_pipeline(pipeline, out)
    write_card(out, "text-to-image", card)
    judged = ", ".join(f"{name} {value:.3f}" for name, value in card["unet"]["judge"].items())
    print(f"wrote {out}: judge on generated images {judged}")
    return 0


def run_models_train_style_judge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.personal import StyleJudgeRecipe, train_style_judge
    from tinyworld.text_to_image import load_pipeline
    from tinyworld.weights import PIPELINE_DIR, STYLE_JUDGE_DIR, write_card

    torch.set_num_threads(2)
    vae = load_pipeline(PIPELINE_DIR).vae
    judge, card = train_style_judge(StyleJudgeRecipe(), vae, lambda line: print(f"  {line}", file=sys.stderr))
    out = args.out or STYLE_JUDGE_DIR
    judge.save(out, card)
    write_card(out, "style judge", card)
    print(f"wrote {out}: validation accuracy {card['validation_accuracy']:.3f}, {card['train_s']:.0f} s")
    return 0


def run_models_make_personal(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.judge import Judge
    from tinyworld.personal import (
        STYLE_ATTRIBUTES,
        PersonalRecipe,
        personal_report,
        save_adapter,
        train_adapter,
    )
    from tinyworld.scenes import STYLES
    from tinyworld.text_to_image import load_pipeline
    from tinyworld.weights import PIPELINE_DIR, STYLE_JUDGE_DIR

    recipe = with_steps(PersonalRecipe(), args.steps, parser)
    if args.style not in STYLES:
        parser.error(f"--style must be one of {', '.join(STYLES)}")
    torch.set_num_threads(2)
    pipeline = load_pipeline(args.base or PIPELINE_DIR)
    say = lambda line: print(f"  {line}", file=sys.stderr)  # noqa: E731
    card = train_adapter(pipeline, args.user, args.style, recipe, say)
    if args.eval_prompts < 1:
        parser.error("--eval-prompts must be at least 1")
    style_judge = Judge.load(STYLE_JUDGE_DIR, STYLE_ATTRIBUTES)
    card |= personal_report(pipeline, args.user, args.style, style_judge, args.eval_prompts)
    save_adapter(pipeline, args.user, card, args.out)
    print(
        f"wrote {args.out}: user {args.user}, style {args.style}, {card['train_s']:.0f} s; the style judge "
        f"reads {args.style} in {card['style_share_base']:.2f} of base images, "
        f"{card['style_share_personal']:.2f} with the adapter"
    )
    return 0


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="real diffusion end to end on CPU executors, with a report")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="model, images and report go here")
    p.add_argument("--tasks", type=int, default=18, help="tasks of 1, 2 and 4 patches (default 18)")
    p.add_argument("--executors", type=int, default=4, help="CPU executors (default 4)")
    p.add_argument(
        "--steps",
        default=None,
        help="step counts the tasks are pinned to in turn, comma-separated, each in [1, 32] "
        "(default 1,2,4,8,12,20)",
    )
    p.add_argument("--amqp-url", help="RabbitMQ URL (default: a fresh local vhost eat-demo)")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services import demo  # matplotlib and torch load only for this command
    from services.stack import StackError

    try:
        sweep = demo.STEP_SWEEP if args.steps is None else tuple(int(part) for part in args.steps.split(","))
    except ValueError:
        parser.error(f"--steps wants comma-separated integers, got {args.steps!r}")
    if args.tasks < 1 or args.executors < 1 or not all(1 <= s <= 32 for s in sweep):
        parser.error("--tasks and --executors must be >= 1, --steps each in [1, 32]")
    if not stack_cli.broker_reachable(args.amqp_url or stack_cli.DEFAULT_AMQP):
        print(
            "RabbitMQ is not reachable. Start it with `rabbitmq-server -detached` (or run "
            "`scripts/ensure_rabbitmq.sh`, which installs it with apt-get when missing), then try again.",
            file=sys.stderr,
        )
        return 2
    with demo.demo_broker(args.amqp_url) as amqp_url:
        settings = demo.DemoSettings(args.out, amqp_url, args.tasks, args.executors, sweep)
        try:
            report = demo.run_demo(settings)
        except StackError as err:
            print(f"eat demo: {err}", file=sys.stderr)
            return 1
    demo.print_report(report, args.out)
    return 0 if report.lost == 0 else 1


def _add_bench_sim(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("sim", help="simulator decisions/s, single env vs batched")
    p.add_argument("--nodes", type=int, nargs="+", default=list(sim_bench.DEFAULT_NODES))
    p.add_argument("--batches", type=int, nargs="+", default=list(sim_bench.DEFAULT_BATCHES))
    p.add_argument("--seconds", type=float, help=f"per measurement (default {sim_bench.DEFAULT_SECONDS})")
    p.add_argument("--quick", action="store_true", help=f"a smoke run: {sim_bench.QUICK_SECONDS}s default")
    p.add_argument("--seed", type=int, default=sim_bench.ACTION_SEED, help="action and env seed")
    p.add_argument("--json", type=Path, help="write the report here (default: print it)")
    p.set_defaults(handler=run_bench_sim)


def _add_bench_pipeline(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("pipeline", help="end-to-end tasks/s through the stack and Decide latency")
    p.add_argument("--amqp-url", help="default: a fresh local vhost eat-bench (rabbitmqctl)")
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--executors", type=int, default=4)
    p.add_argument("--policy", default="reuse", help="policy served during the throughput run")
    p.add_argument("--decide-policy", default="", help="Decide latency (default: EAT, paper architecture)")
    p.add_argument("--work-dir", type=Path, default=Path("out/bench-pipeline"))
    p.add_argument("--json", type=Path, help="write the report here (default: print it)")
    p.set_defaults(handler=run_bench_pipeline)


def run_bench_pipeline(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.bench import pipeline
    from services.common import vhost

    def bench(amqp_url: str) -> dict:
        settings = pipeline.PipelineSettings(
            amqp_url, args.work_dir, args.tasks, args.warmup, args.executors, args.policy, args.decide_policy
        )
        return pipeline.run_pipeline_bench(settings)

    if args.amqp_url:
        report = bench(args.amqp_url)
    elif vhost.can_manage():
        with vhost.temporary(f"eat-bench-{os.getpid()}") as url:  # concurrent benches stay apart
            report = bench(url)
    else:
        parser.error("no rabbitmqctl to make a clean vhost: pass --amqp-url")
    print(pipeline.format_report(report))
    _emit_report(report, args.json)
    return 0 if report["lost"] == 0 else 1


def _add_bench_quality(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "quality", help="image quality vs denoising steps: CLIP score and judge accuracy per step count"
    )
    p.add_argument("--model-dir", type=Path, default=None, help="pipeline directory (default: shipped)")
    p.add_argument("--scorer", type=Path, default=None, help="open_clip model directory (default: shipped)")
    p.add_argument("--samples", type=int, default=200, help="prompts (scenes of the split, seeded)")
    p.add_argument("--steps", default=",".join(map(str, QUALITY_STEPS)), help="comma-separated step counts")
    p.add_argument("--split", default="validation", choices=("validation", "test"), help="test: unseen pairs")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the executor's)")
    p.add_argument("--json", type=Path, help="write the curve here")
    p.set_defaults(handler=run_bench_quality)


QUALITY_STEPS = (1, 2, 3, 5, 8, 12, 20, 30)


def run_bench_quality(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from tinyworld.judge import Judge
    from tinyworld.quality import CHANCE, JUDGED, measure_quality
    from tinyworld.scorer import load_scorer
    from tinyworld.text_to_image import GUIDANCE_SCALE, load_pipeline
    from tinyworld.weights import JUDGE_DIR, PIPELINE_DIR, SCORER_DIR

    try:
        steps = [int(part) for part in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps wants comma-separated integers, got {args.steps!r}")
    if not steps or min(steps) < 1 or args.samples < 2:
        parser.error("--steps must be positive and --samples at least 2")
    torch.set_num_threads(2)
    model_dir = args.model_dir or PIPELINE_DIR
    say = lambda line: print(f"  {line}", file=sys.stderr)  # noqa: E731
    curve = measure_quality(
        load_pipeline(model_dir),
        Judge.load(JUDGE_DIR),
        load_scorer(args.scorer or SCORER_DIR),
        str(model_dir),
        args.samples,
        steps,
        args.split,
        GUIDANCE_SCALE if args.guidance is None else args.guidance,
        say,
    )
    chance = ", ".join(f"{name} {CHANCE[name]:.2f}" for name in JUDGED)
    at_most = ", ".join(f"{name} {curve.judge[name][-1]:.3f}" for name in JUDGED)
    print(f"{curve.samples} prompts ({curve.split} split); at {steps[-1]} steps the judge reads {at_most}")
    print(
        f"  (chance {chance}); CLIP {curve.clip[0]:.3f} at {steps[0]} steps to {curve.clip[-1]:.3f}, "
        f"Spearman with steps {curve.clip_spearman():.2f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(curve.to_json(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _add_bench_hybrid(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "hybrid",
        help="split-point inference: batch speedup, accuracy vs split point, offloading policies compared",
    )
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--plots", type=Path, help="write the split-curve and utility plots into this folder")
    p.add_argument(
        "--measured",
        type=Path,
        help="take the batch speedup and split curve from this earlier report instead of measuring",
    )
    p.add_argument(
        "--save-curve",
        type=Path,
        help="also write the measured curve and speedup where the scheduler reads them "
        "(policy_models/offload/split_curve.json)",
    )
    p.add_argument("--samples", type=int, default=60, help="prompts per user and split point (default 60)")
    p.add_argument("--seeds", type=int, default=40, help="simulator seeds per size, from 1000 (default 40)")
    p.add_argument("--users", default="8,16,32,64", help="comma-separated user counts")
    p.add_argument("--servers", default="1,2,4,8", help="comma-separated edge server counts")
    p.add_argument(
        "--measure-only", action="store_true", help="measure speedup and curve, skip the simulator"
    )
    p.set_defaults(handler=run_bench_hybrid)


def run_bench_hybrid(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.bench import hybrid

    try:
        users = [int(part) for part in args.users.split(",")]
        servers = [int(part) for part in args.servers.split(",")]
    except ValueError:
        parser.error("--users and --servers want comma-separated integers")
    if min(users) < 1 or min(servers) < 1 or args.seeds < 2 or args.samples < 2:
        parser.error("--users, --servers positive; --seeds and --samples at least 2")
    if args.measured and not args.measured.is_file():
        parser.error(f"--measured: no report at {args.measured}")
    say = lambda line: print(f"  {line}", file=sys.stderr)  # noqa: E731
    measured = json.loads(args.measured.read_text()) if args.measured else hybrid.measure(args.samples, say)
    if args.save_curve:
        hybrid.save_curve(measured, args.save_curve)
        print(f"wrote {args.save_curve}")
    report = dict(measured)
    if not args.measure_only:
        report |= hybrid.compare_policies(measured, users, servers, range(1000, 1000 + args.seeds), say)
    print(hybrid.format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plots and "policies" in report:
        for path in hybrid.write_plots(report, args.plots):
            print(f"wrote {path}")
    return 0


def _add_bench_executor(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("executor", help="patch-parallel gangs: s/step for k=1,2,4, regroup cost, exactness")
    p.add_argument("--model-dir", type=Path, help="a saved SD 1.5 pipeline (default: the tiny model)")
    p.add_argument("--unet-config", choices=("model", "sd15"), default="model", help="sd15: random UNet")
    p.add_argument("--resolution", type=int, default=0, help="pixels (default: 64 tiny, 512 otherwise)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (members spread over the GPUs)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=4, help="displaced mode's fresh steps")
    p.add_argument("--work-dir", type=Path, default=Path("out/bench-executor"))
    p.add_argument("--json", type=Path, help="write the report here (default: print it)")
    p.set_defaults(handler=run_bench_executor)


def run_bench_executor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.bench import executor

    settings = executor.ExecutorBenchSettings(
        work_dir=args.work_dir,
        model_dir=args.model_dir,
        unet_config=args.unet_config,
        resolution=args.resolution,
        device=args.device,
        dtype=args.dtype,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
    )
    report = executor.run_executor_bench(settings)
    print(executor.format_report(report))
    _emit_report(report, args.json)
    return 0


def _eval_suite(args: argparse.Namespace, parser: argparse.ArgumentParser) -> suites.Suite | None:
    """The preset's suite, or None for a --nodes/--rates grid."""
    if not args.preset:
        return None
    if args.rates:
        parser.error("--rates goes with --nodes, not --preset")
    if args.preset != "paper" and (args.mode != "paper" or args.profile != "reference"):
        parser.error(f"--preset {args.preset} fixes its own modes and profiles: drop --mode/--profile")
    return suites.suite(args.preset, args.mode, args.profile)


def _eval_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[SimConfig]:
    suite = _eval_suite(args, parser)
    if suite is not None:
        return suite.settings
    if not args.rates:
        parser.error("--nodes needs --rates")
    try:
        return evaluation.grid_settings(args.nodes, args.rates, args.mode, args.profile)
    except ValueError as err:
        parser.error(str(err))


def run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _register_profile_file(args, parser)
    suite = _eval_suite(args, parser)
    settings = _eval_settings(args, parser)
    names = args.policies or policy_names()
    unknown = sorted(name for name in names if not is_known_policy(name))
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {policy_names()} or checkpoint:<dir>")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    seeds = evaluation.default_seeds(args.seeds, args.seed_base)

    def progress(row: evaluation.EvalRow) -> None:
        # stderr, so stdout stays the report
        print(f"  {row.policy} {row.setting.label}: {row.run_s:.2f}s", file=sys.stderr)

    def skipped(name: str, cfg: SimConfig) -> None:
        print(f"  {name} {evaluation.SettingKey.of(cfg).label}: not served there, skipped", file=sys.stderr)

    rows = evaluation.evaluate(names, settings, seeds, progress=progress, skipped=skipped)
    mode = args.mode if suite is None or suite.name == "paper" else "per setting"
    profile = args.profile if suite is None or suite.name == "paper" else "per setting"
    print(f"# {evaluation.describe_run(seeds, mode, profile)}\n")
    if suite is None or len(suite.groups) == 1:
        print(evaluation.markdown_report(rows))
    else:  # a table per group keeps the tables readable
        for group in suite.groups:
            print(f"## {group.name}: {group.description}\n")
            print(evaluation.markdown_report(paired.rows_in_group(rows, group)))
    print(paired.comparison_report(rows, suite))
    if args.json:
        gaps = paired.setting_gaps(rows)
        if suite is not None:
            gaps += [g for base in ("reuse", paired.BEST) for g in paired.pooled_gaps(rows, suite, base)]
        evaluation.write_json(rows, args.json, extra={"gaps": [g.record() for g in gaps]})
    if args.csv:
        evaluation.write_csv(rows, args.csv)
    if args.plots:
        evaluation.write_plots(rows, args.plots)
    return 0


def _register_profile_file(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    try:
        if args.profile_file:
            load_profile(args.profile_file)
        get_profile(args.profile)
    except ValueError as err:
        parser.error(str(err))


def _add_calibrate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("calibrate", help="fit a timing profile and quality curve to recorded traces")
    p.add_argument("--timings", type=Path, nargs="+", required=True, help="executor-*-timings.jsonl or dirs")
    p.add_argument("--scores", type=Path, nargs="*", default=[], help="evaluator-scores.jsonl or dirs")
    p.add_argument("--name", required=True, help="the fitted profile's name (eat eval --profile NAME)")
    p.add_argument("--out", type=Path, required=True, help="the profile JSON to write")
    p.add_argument("--compare", default="reference", help="profile to compare with and fall back to")
    p.add_argument("--model", help="use only this model's records (default: all)")
    p.add_argument("--min-samples", type=int, default=3, help="fewest samples behind a fitted figure")
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from policy_models.calibration import CalibrationError
    from services.calibrate import run_calibration

    if args.min_samples < 1:
        parser.error("--min-samples must be >= 1")
    try:
        run = run_calibration(
            args.timings,
            args.scores,
            args.name,
            args.out,
            compare_name=args.compare,
            model=args.model,
            min_samples=args.min_samples,
        )
    except (CalibrationError, FileNotFoundError, ValueError) as err:
        print(f"eat calibrate: {err}", file=sys.stderr)
        return 2
    for problem in run.traces.skipped[:5]:
        print(f"skipped {problem}", file=sys.stderr)
    if run.traces.skipped:
        print(f"skipped {len(run.traces.skipped)} unreadable line(s) in all", file=sys.stderr)
    print(f"# calibrated profile {args.name!r} from {len(run.traces.files)} file(s)\n")
    print(run.table)
    print("\n" + "\n".join(f"- {note}" for note in run.calibration.notes))
    print(f"\nwrote {run.out}")
    return 0


def run_bench_sim(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be > 0")
    default_seconds = sim_bench.QUICK_SECONDS if args.quick else sim_bench.DEFAULT_SECONDS
    report = sim_bench.run_sim_bench(
        args.nodes, args.batches, args.seconds or default_seconds, seed=args.seed
    )
    print(sim_bench.format_table(report))
    _emit_report(report, args.json)
    return 0


def _emit_report(report: dict[str, Any], path: Path | None) -> None:
    """A benchmark's JSON report: written to `path`, or printed when there is none."""
    text = json.dumps(report, indent=2) + "\n"
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    else:
        print(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, parser)


if __name__ == "__main__":
    sys.exit(main())
