"""The offloading model, its exact split solver and optimum, the placement process and the policies."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_models.offload.env import OffloadEnvs
from policy_models.offload.model import (
    AccuracyCurve,
    Assignment,
    Batch,
    OffloadConfig,
    curve_from_measurement,
    fit_accuracy_curve,
    fit_batch_beta,
    make_instance,
    score,
    solve_splits,
    validate,
)
from policy_models.offload.net import Scorer, ScorerConfig, load_numpy_scorer, save_scorer
from policy_models.offload.optimal import count_assignments, enumerate_optimum, optimal_assignment
from policy_models.offload.policies import BASELINES, NetworkPolicy, make_policy, run_sequential

PERSONAL = {0: 0.55, 2: 0.55, 4: 0.55, 7: 0.5, 10: 0.45, 12: 0.35, 15: 0.2, 18: 0.1, 20: 0.05}


def curve(steps: int = 20) -> AccuracyCurve:
    """The expected measured shape, built in code (tests never read the measurement file)."""
    scale = steps / 20
    points = [{"split": round(s * scale), "clip": 0.93, "personal": p} for s, p in PERSONAL.items()]
    return curve_from_measurement({"steps": steps, "points": points, "note": "ignored"})


def instance(seed: int, n: int, k: int, steps: int = 20, **config: float):
    return make_instance(seed, n, k, curve(steps), OffloadConfig(**config))


def random_actions(envs: OffloadEnvs, rng: np.random.Generator) -> np.ndarray:
    valid = envs.observe().valid
    return np.argmax(np.where(valid, rng.random(valid.shape), -1.0), axis=1)


# ----- curve and timing fits -----


def test_curve_fit_is_concave_non_increasing_and_close_to_the_points() -> None:
    fitted = curve().array()
    assert fitted.shape == (21,)
    assert np.all(np.diff(fitted) <= 1e-12)
    assert np.all(np.diff(fitted, 2) <= 1e-12)
    assert np.all((fitted >= 0) & (fitted <= 1))
    for s, p in PERSONAL.items():
        assert abs(fitted[s] - 0.93 * p) < 0.03


def test_curve_fit_reproduces_a_concave_curve_exactly() -> None:
    truth = 0.8 - 0.002 * np.arange(11) ** 2
    splits = [0, 3, 5, 8, 10]
    fitted = fit_accuracy_curve(splits, truth[splits], 10).array()
    assert np.allclose(fitted[splits], truth[splits], atol=1e-9)


def test_batch_beta_from_a_speedup_table() -> None:
    beta = 0.3
    table = {b: b / (1 + beta * (b - 1)) for b in (1, 2, 4, 8)}
    assert fit_batch_beta(table) == pytest.approx(beta)
    assert fit_batch_beta(None) == OffloadConfig().beta


# ----- instances, formulas, split solver -----


def test_fixed_seeds_give_identical_instances() -> None:
    assert instance(7, 16, 4).same_as(instance(7, 16, 4))
    assert not instance(7, 16, 4).same_as(instance(8, 16, 4))


def test_latency_and_utility_by_hand() -> None:
    inst = instance(0, 3, 1)
    inst = type(inst)(
        latency_weight=np.array([0.1, 0.05, 0.02]),
        device_speed=np.array([1.0, 2.0, 0.5]),
        availability=np.array([0.5]),
        accuracy=inst.accuracy,
        edge_step_s=0.05,
        beta=0.5,
        transfer_s=0.1,
        adapter_load_s=1.0,
        max_batch=8,
    )
    a = inst.accuracy
    assignment = Assignment((2,), ((Batch((0, 1), 10),),))
    out = score(inst, assignment)
    step = 0.05 / 0.5 * (1 + 0.5)  # batch of two at half availability
    assert out.latency_s[0] == pytest.approx(10 * step + 0.1 + 10 / 1.0)
    assert out.latency_s[1] == pytest.approx(10 * step + 0.1 + 10 / 2.0)
    assert out.latency_s[2] == pytest.approx(20 / 0.5)
    assert list(out.accuracy) == [a[10], a[10], a[0]]
    assert out.utility[0] == pytest.approx(a[10] - 0.1 * (1.5 + 0.1 + 10))
    # A batch of one runs its member's own adapter: a(0) at any split, after the adapter is loaded.
    alone = score(inst, Assignment((2,), ((Batch((0,), 20), Batch((1,), 5)),)))
    first = 1.0 / 0.5 + 20 * 0.1
    assert alone.accuracy[0] == alone.accuracy[1] == a[0]
    assert alone.latency_s[0] == pytest.approx(first + 0.1)
    assert alone.latency_s[1] == pytest.approx(first + 2.0 + 5 * 0.1 + 0.1 + 15 / 2.0)


@pytest.mark.parametrize("seed", range(4))
def test_split_solver_matches_brute_force(seed: int) -> None:
    inst = instance(seed, 5, 2, steps=8)
    layout = [[(0, 1), (2,)], [(3, 4)]]
    solved = solve_splits(inst, (), layout)
    best = max(
        score(
            inst,
            Assignment(
                (),
                (
                    (Batch((0, 1), s[0]), Batch((2,), s[1])),
                    (Batch((3, 4), s[2]),),
                ),
            ),
        ).total
        for s in itertools.product(range(1, 9), repeat=3)
    )
    assert score(inst, solved).total == pytest.approx(best, abs=1e-12)


# ----- the exact optimum -----


def test_assignment_count() -> None:
    assert count_assignments(1, 1, 8) == 2
    assert count_assignments(2, 1, 8) == 1 + 2 + 3  # both local; one local; 3 ordered batchings
    assert count_assignments(3, 2, 2) == sum(1 for _ in _layouts(3, 2, 2))


def _layouts(n: int, k: int, max_batch: int):
    from policy_models.offload.optimal import all_layouts

    return all_layouts(n, k, max_batch)


@pytest.mark.parametrize(("seed", "n", "k"), [(0, 4, 2), (1, 4, 1), (2, 3, 2)])
def test_dynamic_programme_matches_enumeration(seed: int, n: int, k: int) -> None:
    inst = instance(seed, n, k, steps=10)
    best, _ = enumerate_optimum(inst)
    found = optimal_assignment(inst)
    validate(inst, found)
    assert score(inst, found).total == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "k"), [(3, 6, 2), (4, 6, 1), (5, 5, 2)])
def test_optimum_beats_every_policy(seed: int, n: int, k: int, tmp_path: Path) -> None:
    inst = instance(seed, n, k)
    best = score(inst, optimal_assignment(inst)).total
    for name in BASELINES:
        assert score(inst, make_policy(name).solve(inst)).total <= best + 1e-9, name
    for mode in ("convex", "chosen"):
        net = NetworkPolicy(mode, _random_numpy_scorer(mode, tmp_path), mode)  # type: ignore[arg-type]
        assert score(inst, net.solve(inst)).total <= best + 1e-9


# ----- policies -----


def _random_numpy_scorer(mode: str, folder: Path):
    torch.manual_seed(0)
    scorer = Scorer(ScorerConfig(mode=mode))
    with torch.no_grad():
        for p in scorer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    save_scorer(scorer, folder / mode, {"note": "test"})
    return load_numpy_scorer(folder / mode)[0]


@pytest.mark.parametrize(("n", "k"), [(8, 1), (16, 4), (19, 2)])
def test_every_policy_returns_a_valid_assignment(n: int, k: int, tmp_path: Path) -> None:
    instances = [instance(seed, n, k) for seed in range(3)]
    policies = [make_policy(name) for name in BASELINES if name != "optimal"]
    policies += [NetworkPolicy(m, _random_numpy_scorer(m, tmp_path), m) for m in ("convex", "chosen")]  # type: ignore[arg-type]
    for policy in policies:
        for inst, assignment in zip(instances, policy.solve_many(instances), strict=True):
            validate(inst, assignment)
            assert policy.solve(inst) == assignment


def test_all_edge_uses_batches_of_one_and_the_personal_model() -> None:
    inst = instance(1, 12, 3)
    assignment = make_policy("all-edge").solve(inst)
    assert assignment.local == ()
    assert all(len(b.users) == 1 and b.split == inst.steps for s in assignment.servers for b in s)
    assert np.all(score(inst, assignment).accuracy == inst.accuracy[0])


def test_fixed_third_and_all_local() -> None:
    inst = instance(2, 20, 2)
    fixed = make_policy("fixed-third").solve(inst)
    assert sorted(len(b.users) for s in fixed.servers for b in s) == [4, 8, 8]
    assert all(b.split == 7 for s in fixed.servers for b in s)
    local = make_policy("all-local").solve(inst)
    assert local.local == tuple(range(20))


def test_saved_weights_load_back_with_the_same_decisions(tmp_path: Path) -> None:
    scorer = _random_numpy_scorer("convex", tmp_path)
    reloaded, config = load_numpy_scorer(tmp_path / "convex")
    assert config.mode == "convex"
    instances = [instance(seed, 16, 2) for seed in range(4)]
    first = NetworkPolicy("a", scorer, "convex").solve_many(instances)
    assert NetworkPolicy("b", reloaded, "convex").solve_many(instances) == first
    # The torch forward gives the same logits as the NumPy decision path.
    torch_scorer = Scorer(config)
    from safetensors.torch import load_file

    torch_scorer.load_state_dict(load_file(str(tmp_path / "convex.safetensors")))
    envs = OffloadEnvs(instances, "convex")
    cand = envs.observe()
    with torch.no_grad():
        logits = torch_scorer(torch.from_numpy(cand.features), torch.from_numpy(cand.valid)).numpy()
    assert np.allclose(logits, scorer(cand.features, cand.valid), atol=1e-4)


# ----- the placement process -----


@pytest.mark.parametrize(("mode", "n", "k"), [("convex", 12, 2), ("chosen", 12, 2), ("convex", 20, 4)])
def test_batched_process_matches_scalar_scoring(mode: str, n: int, k: int) -> None:
    instances = [instance(seed, n, k) for seed in range(6)]
    envs = OffloadEnvs(instances, mode)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    returns = np.zeros(len(instances))
    while not envs.done:
        cand = envs.observe()
        actions = np.argmax(np.where(cand.valid, rng.random(cand.valid.shape), -1.0), axis=1)
        user = envs.current_user()
        rewards = envs.step(actions)
        rows = np.arange(len(instances))
        assert np.allclose(rewards, cand.delta[rows, actions], atol=1e-12)
        outcomes = [score(inst, a) for inst, a in zip(instances, envs.assignments(), strict=True)]
        own = np.array([o.utility[u] for o, u in zip(outcomes, user, strict=True)])
        assert np.allclose(own, cand.own[rows, actions], atol=1e-12)
        returns += rewards
    for inst, assignment, total in zip(instances, envs.assignments(), returns, strict=True):
        validate(inst, assignment)
        assert score(inst, assignment).total == pytest.approx(total, abs=1e-9)
        if mode == "convex":
            layout = [[b.users for b in batches] for batches in assignment.servers]
            assert solve_splits(inst, assignment.local, layout) == assignment


def test_sequential_runs_are_independent_of_batching() -> None:
    instances = [instance(seed, 10, 2) for seed in range(3)]
    greedy = make_policy("greedy-social")
    together = run_sequential(instances, greedy.choose)  # type: ignore[attr-defined]
    assert together == [greedy.solve(inst) for inst in instances]


@pytest.mark.parametrize("name", ["drl-convex", "pure-drl"])
def test_shipped_weights_decide_valid_rounds(name: str) -> None:
    policy = make_policy(name)
    instances = [instance(seed, 12, 3) for seed in range(2)]
    for inst, assignment in zip(instances, policy.solve_many(instances), strict=True):
        validate(inst, assignment)


@pytest.mark.slow
def test_training_is_reproducible_and_writes_a_self_describing_checkpoint(tmp_path: Path) -> None:
    import json

    from policy_models.offload.net import load_scorer
    from policy_models.offload.train import TrainRecipe, train

    recipe = TrainRecipe(iterations=3, validate_every=1)
    first = train("drl-convex", recipe, weights_dir=tmp_path / "a")
    second = train("drl-convex", recipe, weights_dir=tmp_path / "b")
    assert first.iterations == second.iterations == 3 and first.train_seeds == second.train_seeds
    a, b = load_scorer(tmp_path / "a" / "drl-convex"), load_scorer(tmp_path / "b" / "drl-convex")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    card = json.loads((tmp_path / "a" / "drl-convex.json").read_text())
    assert card["recipe"]["iterations"] == 3 and card["policy"] == "drl-convex"
