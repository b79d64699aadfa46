"""Training of the candidate scorer by REINFORCE with a shared-instance baseline.

Each iteration draws instances of one size (sizes cycle over N in {8, 16, 32, 64}, K in {1, 2, 4, 8},
so one network serves every size), runs `SAMPLES` sampled episodes of each instance side by side in
`OffloadEnvs`, and pushes up the log-probability of every decision of an episode by how much better
its final mean utility was than the mean of the same instance's episodes (the baseline needs no critic
and cancels the instance's own difficulty). The best weights on a fixed validation set (argmax
decisions) are kept. Training instances use seeds from TRAIN_SEED_BASE up and validation instances
from VALID_SEED_BASE, both disjoint from the evaluation seeds 1000-1039.

    python -m policy_models.offload.train --policy drl-convex
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from policy_models.offload.env import OffloadEnvs, SplitMode
from policy_models.offload.model import (
    AccuracyCurve,
    OffloadConfig,
    default_config,
    default_curve,
    make_instance,
)
from policy_models.offload.net import WEIGHTS_DIR, NumpyScorer, Scorer, ScorerConfig, save_scorer
from policy_models.offload.policies import NetworkPolicy

SIZES = tuple(itertools.product((8, 16, 32, 64), (1, 2, 4, 8)))
SAMPLES = 8  # sampled episodes per instance
DECISIONS_PER_ITERATION = 2048  # episodes x users, so every size costs about the same
TRAIN_SEED_BASE = 100_000
VALID_SEED_BASE = 5_000
VALID_INSTANCES = 6  # per size
MODE_OF = {"drl-convex": "convex", "pure-drl": "chosen"}


@dataclass(frozen=True)
class TrainRecipe:
    # The budget is iterations, so that a recipe and its seed give the same weights on any machine;
    # `minutes` only caps the wall time (a slow or busy machine then stops early, and the card says so).
    iterations: int = 1_600
    minutes: float = 30.0
    learning_rate: float = 1e-3
    entropy_weight: float = 1e-3
    validate_every: int = 40
    seed: int = 0


@dataclass(frozen=True)
class TrainStats:
    policy: str
    iterations: int
    episodes: int
    seconds: float
    train_seeds: tuple[int, int]  # first and last instance seed used
    valid_utility: float  # mean per-user utility of the kept weights, validation set, argmax
    valid_utility_start: float  # the same for the initial weights (the social greedy rule)
    valid_history: tuple[tuple[int, float], ...]


def _scorer_numpy(scorer: Scorer) -> NumpyScorer:
    return NumpyScorer({k: v.detach().numpy().copy() for k, v in scorer.state_dict().items()})


def validate(scorer: Scorer, mode: SplitMode, curve: AccuracyCurve, config: OffloadConfig) -> float:
    """Mean per-user utility with argmax decisions over the validation instances of every size."""
    policy = NetworkPolicy("validation", _scorer_numpy(scorer), mode)
    means = []
    for n, k in SIZES:
        instances = [make_instance(VALID_SEED_BASE + j, n, k, curve, config) for j in range(VALID_INSTANCES)]
        envs = OffloadEnvs(instances, mode)
        while not envs.done:
            envs.step(policy.choose(envs.observe()))
        means.append(float(envs.total.mean()) / n)
    return float(np.mean(means))


def _episode_loss(
    scorer: Scorer,
    trace: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    advantage: torch.Tensor,
    recipe: TrainRecipe,
) -> None:
    """Accumulate the gradient of the REINFORCE loss, one decision step at a time (bounded memory)."""
    batch = advantage.shape[0]
    for features, valid, actions in trace:
        logits = scorer(features, valid)
        log_p = torch.log_softmax(logits, dim=1)
        chosen = log_p.gather(1, actions[:, None])[:, 0]
        # Invalid candidates have log p = -inf; zero them before the product so no NaN reaches the gradient.
        safe_log_p = log_p.masked_fill(~valid, 0.0)
        entropy = -(safe_log_p.exp() * safe_log_p).masked_fill(~valid, 0.0).sum(1)
        loss = -(advantage * chosen).sum() / batch - recipe.entropy_weight * entropy.sum() / batch
        loss.backward()


def train(
    policy: str = "drl-convex",
    recipe: TrainRecipe = TrainRecipe(),
    curve: AccuracyCurve | None = None,
    config: OffloadConfig | None = None,
    weights_dir: Path = WEIGHTS_DIR,
) -> TrainStats:
    """Train `policy` ("drl-convex" or "pure-drl") for `recipe.iterations` (at most `recipe.minutes`) on
    one thread and save the best weights to `weights_dir`/`policy`.safetensors + .json."""
    torch.set_num_threads(1)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    mode: SplitMode = MODE_OF[policy]  # type: ignore[assignment]
    curve = curve or default_curve()
    config = config or default_config()
    scorer = Scorer(ScorerConfig(mode=mode))
    optimiser = torch.optim.Adam(scorer.parameters(), lr=recipe.learning_rate)
    start = time.monotonic()
    best = validate(scorer, mode, curve, config)
    history = [(0, best)]
    best_state = {k: v.clone() for k, v in scorer.state_dict().items()}
    next_seed, iteration, episodes = TRAIN_SEED_BASE, 0, 0
    order = list(SIZES)
    while iteration < recipe.iterations and time.monotonic() - start < recipe.minutes * 60:
        if iteration % len(order) == 0:
            rng.shuffle(order)
        n, k = order[iteration % len(order)]
        n_instances = max(1, DECISIONS_PER_ITERATION // (n * SAMPLES))
        instances = [make_instance(next_seed + j, n, k, curve, config) for j in range(n_instances)]
        next_seed += n_instances
        envs = OffloadEnvs([inst for inst in instances for _ in range(SAMPLES)], mode)
        trace = []
        with torch.no_grad():
            while not envs.done:
                cand = envs.observe()
                features, valid = torch.from_numpy(cand.features), torch.from_numpy(cand.valid)
                actions = torch.distributions.Categorical(logits=scorer(features, valid)).sample()
                envs.step(actions.numpy())
                trace.append((features, valid, actions))
        returns = torch.from_numpy(envs.total / n).reshape(n_instances, SAMPLES)
        advantage = returns - returns.mean(dim=1, keepdim=True)
        advantage = (advantage / (advantage.std() + 1e-6)).reshape(-1).float()
        optimiser.zero_grad()
        _episode_loss(scorer, trace, advantage, recipe)
        torch.nn.utils.clip_grad_norm_(scorer.parameters(), 1.0)
        optimiser.step()
        iteration += 1
        episodes += envs.b
        if iteration % recipe.validate_every == 0:
            score_now = validate(scorer, mode, curve, config)
            history.append((iteration, score_now))
            if score_now > best:
                best, best_state = score_now, {k: v.clone() for k, v in scorer.state_dict().items()}
    scorer.load_state_dict(best_state)
    stats = TrainStats(
        policy=policy,
        iterations=iteration,
        episodes=episodes,
        seconds=time.monotonic() - start,
        train_seeds=(TRAIN_SEED_BASE, next_seed - 1),
        valid_utility=best,
        valid_utility_start=history[0][1],
        valid_history=tuple(history),
    )
    meta = {
        "policy": policy,
        "recipe": asdict(recipe),
        "algorithm": "REINFORCE, shared-instance baseline",
        "samples_per_instance": SAMPLES,
        "decisions_per_iteration": DECISIONS_PER_ITERATION,
        "sizes": [list(s) for s in SIZES],
        "instance_config": asdict(config),
        "accuracy_curve": list(curve.values),
        "validation_seeds": [VALID_SEED_BASE, VALID_SEED_BASE + VALID_INSTANCES - 1],
        "stats": asdict(stats),
    }
    save_scorer(scorer, weights_dir / policy, meta)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", choices=sorted(MODE_OF), default="drl-convex")
    parser.add_argument("--iterations", type=int, default=TrainRecipe.iterations)
    parser.add_argument("--minutes", type=float, default=TrainRecipe.minutes, help="wall-time cap")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stats = train(args.policy, TrainRecipe(args.iterations, args.minutes, seed=args.seed))
    print(asdict(stats))


if __name__ == "__main__":
    main()
