"""The offloading model: accuracy curve, edge and device timing, instances, assignments, the exact
split solver and the scalar scoring of an assignment (the plain statement every faster path is tested
against). The package docstring states the model in words.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CURVE_PATH = Path(__file__).with_name("split_curve.json")
DEFAULT_BETA = 0.35  # batch cost growth per extra member until a speedup table is measured


# ----- accuracy curve ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyCurve:
    """a(s) for s = 0..T: the accuracy of a request whose first s steps ran on the shared base model.
    Concave and non-increasing by construction (see `fit_accuracy_curve`)."""

    values: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.values) - 1

    def array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)


def nnls(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson-Hanson active set; exact in finitely many steps)."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        w = a.T @ (b - a @ x)
        if passive.all() or np.max(np.where(passive, -np.inf, w)) <= tol:
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        for _ in range(3 * n + 10):
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if np.all(z[passive] > tol):
                break
            shrinking = passive & (z <= tol)
            step = np.min(x[shrinking] / np.maximum(x[shrinking] - z[shrinking], 1e-300))
            x = x + step * (z - x)
            passive &= x > tol
        x = np.where(passive, z, 0.0)
    return x


def fit_accuracy_curve(splits: Sequence[int], accuracies: Sequence[float], steps: int) -> AccuracyCurve:
    """Least-squares concave, non-increasing fit over s = 0..steps, clipped to [0, 1].

    The fit is piecewise linear with kinks only at 0 and at the measured splits:
    f(s) = f0 - sum_k g_k * max(0, s - k), g >= 0. Any concave non-increasing function can be replaced
    by the linear interpolation of its values at the measured splits (flat before the first) without
    changing the squared error, so this is the exact least-squares fit over all concave non-increasing
    functions, found by non-negative least squares (no solver library needed). A concave quadratic was
    rejected: its single curvature cannot follow a curve that is flat while the base model only lays
    out the image and then falls, so it misprices exactly the small splits that matter.
    Clipping only acts where the fit would leave [0, 1] past the measured range.
    """
    s = np.asarray(splits, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if len(s) == 0 or np.any(s < 0) or np.any(s > steps):
        raise ValueError("measured splits must lie in 0..steps")
    knots = np.unique(np.concatenate([[0.0], s[s < s.max()]]))
    hinges = np.maximum(0.0, s[:, None] - knots[None, :])
    # The intercept is free: centre both sides and solve for the slopes alone.
    slopes = nnls(-(hinges - hinges.mean(0)), y - y.mean())
    intercept = float(np.mean(y + hinges @ slopes))
    grid = np.arange(steps + 1, dtype=np.float64)
    values = intercept - np.maximum(0.0, grid[:, None] - knots[None, :]) @ slopes
    return AccuracyCurve(tuple(float(v) for v in np.clip(values, 0.0, 1.0)))


def curve_from_measurement(data: Mapping) -> AccuracyCurve:
    """Fit the curve of a measurement `{"steps": T, "points": [{"split", "clip", "personal"}, ...]}`;
    the accuracy of a point is clip x personal (other keys are ignored)."""
    points = data["points"]
    return fit_accuracy_curve(
        [int(p["split"]) for p in points],
        [float(p["clip"]) * float(p["personal"]) for p in points],
        int(data["steps"]),
    )


def load_accuracy_curve(path: Path | str = DEFAULT_CURVE_PATH) -> AccuracyCurve:
    """The fitted curve of a measurement file (JSON only; nothing is unpickled)."""
    return curve_from_measurement(json.loads(Path(path).read_text()))


PROVISIONAL_PERSONAL = {0: 0.55, 2: 0.55, 4: 0.55, 7: 0.50, 10: 0.45, 12: 0.35, 15: 0.20, 18: 0.10, 20: 0.05}


def provisional_measurement() -> dict:
    """The expected shape of the measurement, for development until it is measured: T = 20, CLIP
    flat at 0.93, personalisation intact up to s = 4 and nearly gone at s = 20."""
    points = [{"split": s, "clip": 0.93, "personal": p} for s, p in PROVISIONAL_PERSONAL.items()]
    return {"steps": 20, "points": points}


@functools.cache
def shipped_measurement() -> Mapping[str, Any]:
    """The measurement the scheduler prices with: the shipped file (`eat bench hybrid --save-curve`
    writes it) when it exists, else the provisional shape. Read once per process: every default
    instance, policy and the policy server share it."""
    if DEFAULT_CURVE_PATH.exists():
        return json.loads(DEFAULT_CURVE_PATH.read_text())
    return provisional_measurement()


@functools.cache
def default_curve() -> AccuracyCurve:
    """The fitted curve of the shipped measurement."""
    return curve_from_measurement(shipped_measurement())


def measured_speedup() -> dict[int, float] | None:
    """The batch-speedup table measured with the curve, if any."""
    table = shipped_measurement().get("batch_speedup")
    return {int(k): float(v) for k, v in table.items()} if table else None


def fit_batch_beta(speedups: Mapping[int, float] | None) -> float:
    """beta of t(b) = t(1) (1 + beta (b - 1)) from a table {b: speedup(b) = b t(1) / t(b)}, by least
    squares on t(b)/t(1) - 1 = beta (b - 1), clipped to [0, 1]. None: the default until measured."""
    if not speedups:
        return DEFAULT_BETA
    b = np.array([float(k) for k in speedups], dtype=np.float64)
    relative_time = b / np.array([float(v) for v in speedups.values()]) - 1.0
    extra = b - 1.0
    if not np.any(extra > 0):
        return DEFAULT_BETA
    return float(np.clip(np.dot(extra, relative_time) / np.dot(extra, extra), 0.0, 1.0))


# ----- instances ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OffloadConfig:
    """How instances are drawn. Defaults: an edge step at batch 1 takes 50 ms on a fully available
    server; devices run 0.4-4 steps/s (5x-50x slower), log-uniform; a user prices a second of latency at
    1%-20% of the best accuracy a(0), log-uniform (a patient user gives up a fifth of it for 20 s, an
    impatient one for 1 s). The price is relative to a(0) so that the trade-off means the same whatever
    scale the measured accuracy has (the product of a CLIP score and a judge's share is far from 1).
    Availability is uniform in [0.3, 1]. With these, all-local loses on slow devices, all-edge queues
    badly once a server holds more than a few users, and one fixed split is wrong for both the patient
    and the impatient, so no trivial policy dominates (the evaluation shows each losing)."""

    edge_step_s: float = 0.05
    device_speed: tuple[float, float] = (0.4, 4.0)  # steps/s, log-uniform
    latency_price: tuple[float, float] = (0.01, 0.2)  # lambda / a(0), per second, log-uniform
    availability: tuple[float, float] = (0.3, 1.0)  # uniform
    transfer_s: float = 0.05  # latent upload + download of an offloaded request
    adapter_load_s: float = 1.0  # server seconds to load and apply one user's adapter (availability 1)
    max_batch: int = 8
    beta: float = DEFAULT_BETA


def default_config() -> OffloadConfig:
    """The instance configuration with beta fitted to the measured batch speedup, where measured."""
    return OffloadConfig(beta=fit_batch_beta(measured_speedup()))


def _frozen(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype=np.float64)
    values.flags.writeable = False
    return values


@dataclass(frozen=True, eq=False)
class Instance:
    """One round: N users arriving together, K edge servers."""

    latency_weight: np.ndarray  # (N,) lambda_i
    device_speed: np.ndarray  # (N,) v_i, steps/s
    availability: np.ndarray  # (K,)
    accuracy: np.ndarray  # (T + 1,) a(s)
    edge_step_s: float
    beta: float
    transfer_s: float
    adapter_load_s: float
    max_batch: int
    seed: int = -1

    @property
    def n_users(self) -> int:
        return len(self.latency_weight)

    @property
    def n_servers(self) -> int:
        return len(self.availability)

    @property
    def steps(self) -> int:
        return len(self.accuracy) - 1

    def step_time(self, server: int, batch_size: int) -> float:
        """Seconds per denoising step of a batch of `batch_size` on `server`."""
        return self.edge_step_s / self.availability[server] * (1.0 + self.beta * (batch_size - 1))

    def adapter_time(self, server: int) -> float:
        """Server seconds a batch of one spends loading its member's adapter before its steps."""
        return self.adapter_load_s / self.availability[server]

    def adapter_times(self) -> np.ndarray:
        return self.adapter_load_s / self.availability

    def step_times(self) -> np.ndarray:
        """(K, max_batch + 1): step time by server and batch size (column 0 unused)."""
        sizes = np.arange(self.max_batch + 1, dtype=np.float64)
        return self.edge_step_s / self.availability[:, None] * (1.0 + self.beta * (sizes[None, :] - 1))

    def same_as(self, other: Instance) -> bool:
        fields = ("latency_weight", "device_speed", "availability", "accuracy")
        scalars = ("edge_step_s", "beta", "transfer_s", "adapter_load_s", "max_batch")
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in fields) and all(
            getattr(self, f) == getattr(other, f) for f in scalars
        )


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), size))


def make_instance(
    seed: int,
    n_users: int,
    n_servers: int,
    curve: AccuracyCurve | None = None,
    config: OffloadConfig | None = None,
) -> Instance:
    """The instance of (seed, N, K): the same arguments always give the same instance."""
    rng = np.random.default_rng([seed, n_users, n_servers])
    curve = curve or default_curve()
    config = config or default_config()
    return Instance(
        latency_weight=_frozen(log_uniform(rng, config.latency_price, n_users) * curve.values[0]),
        device_speed=_frozen(log_uniform(rng, config.device_speed, n_users)),
        availability=_frozen(rng.uniform(*config.availability, n_servers)),
        accuracy=_frozen(curve.array()),
        edge_step_s=config.edge_step_s,
        beta=config.beta,
        transfer_s=config.transfer_s,
        adapter_load_s=config.adapter_load_s,
        max_batch=config.max_batch,
        seed=seed,
    )


# ----- assignments and their exact splits --------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Users that run steps [0, split) together on the shared base model, then leave together."""

    users: tuple[int, ...]
    split: int


@dataclass(frozen=True)
class Assignment:
    """Who runs locally, and each server's batches in the order it runs them."""

    local: tuple[int, ...]
    servers: tuple[tuple[Batch, ...], ...]


Layout = Sequence[Sequence[Sequence[int]]]  # per server, per batch in run order, its users


def batch_accuracy(accuracy: np.ndarray, size: int) -> np.ndarray:
    """Accuracy by split 1..T for a batch of `size`: a batch of one runs its member's own adapter on
    the edge, so it keeps the personal model's a(0) at any split."""
    if size == 1:
        return np.full(len(accuracy) - 1, accuracy[0])
    return accuracy[1:]


def solve_server_splits(instance: Instance, server: int, batches: Sequence[Sequence[int]]) -> list[int]:
    """Exact splits of one server's batches for a fixed order.

    The utility of the server's users is sum_m [n_m acc_m(s_m) - s_m c_m] + const, with
    c_m = t_k(b_m) Lambda_{>=m} - sum_{i in m} lambda_i / v_i: the s_m t_k(b_m) seconds of batch m delay
    its members and everyone queued behind (Lambda_{>=m} is their lambda mass), while each member saves
    s_m device steps. The terms do not share variables, so each batch maximises its own concave
    function of s over 1..T, here by evaluating all T points.
    """
    lam, speed, acc = instance.latency_weight, instance.device_speed, instance.accuracy
    grid = np.arange(1, instance.steps + 1)
    behind = 0.0
    splits = [0] * len(batches)
    for m in range(len(batches) - 1, -1, -1):
        members = list(batches[m])
        behind += float(lam[members].sum())
        cost = instance.step_time(server, len(members)) * behind - float(
            (lam[members] / speed[members]).sum()
        )
        values = len(members) * batch_accuracy(acc, len(members)) - grid * cost
        splits[m] = int(grid[np.argmax(values)])
    return splits


def solve_splits(instance: Instance, local: Sequence[int], layout: Layout) -> Assignment:
    """The assignment with the given placement and the utility-maximising split of every batch."""
    servers = []
    for k, batches in enumerate(layout):
        splits = solve_server_splits(instance, k, batches)
        servers.append(
            tuple(Batch(tuple(int(u) for u in b), s) for b, s in zip(batches, splits, strict=True))
        )
    return Assignment(tuple(sorted(int(u) for u in local)), tuple(servers))


# ----- scoring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Per-user results of an assignment."""

    latency_s: np.ndarray
    accuracy: np.ndarray
    utility: np.ndarray

    @property
    def total(self) -> float:
        return float(self.utility.sum())

    def means(self) -> dict[str, float]:
        return {
            "utility": float(self.utility.mean()),
            "latency_s": float(self.latency_s.mean()),
            "accuracy": float(self.accuracy.mean()),
        }


def score(instance: Instance, assignment: Assignment) -> Outcome:
    """Latency, accuracy and utility of every user, straight from the model's definitions."""
    n, steps = instance.n_users, instance.steps
    lam, speed, acc = instance.latency_weight, instance.device_speed, instance.accuracy
    latency = np.zeros(n)
    accuracy = np.zeros(n)
    for i in assignment.local:
        latency[i] = steps / speed[i]
        accuracy[i] = acc[0]
    for k, batches in enumerate(assignment.servers):
        edge_clock = 0.0
        for batch in batches:
            size = len(batch.users)
            edge_clock += batch.split * instance.step_time(k, size)
            if size == 1:
                edge_clock += instance.adapter_time(k)
            for i in batch.users:
                latency[i] = edge_clock + instance.transfer_s + (steps - batch.split) / speed[i]
                accuracy[i] = acc[0] if size == 1 else acc[batch.split]
    return Outcome(latency, accuracy, accuracy - lam * latency)


def validate(instance: Instance, assignment: Assignment) -> None:
    """Raise ValueError unless every user is placed exactly once, batches respect the limit and every
    offloaded batch has a split in 1..T."""
    placed = list(assignment.local)
    if len(assignment.servers) != instance.n_servers:
        raise ValueError("one batch sequence per server expected")
    for batches in assignment.servers:
        for batch in batches:
            if not 1 <= len(batch.users) <= instance.max_batch:
                raise ValueError(f"batch size {len(batch.users)} outside 1..{instance.max_batch}")
            if not 1 <= batch.split <= instance.steps:
                raise ValueError(f"split {batch.split} outside 1..{instance.steps}")
            placed.extend(batch.users)
    if sorted(placed) != list(range(instance.n_users)):
        raise ValueError("every user must be placed exactly once")
