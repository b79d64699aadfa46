"""The exact optimum over every assignment (local or server, ordered batch partitions, exact splits).

Literal enumeration (`all_layouts`) visits every assignment and scores it with the exact split solver;
it is kept as the definition and for tests, and its size is `count_assignments` (with batches of up
to 8: N = 4, K = 2: 541; N = 6, K = 2: 47,293; N = 7, K = 2: 545,835; N = 8, K = 4:
81 million, so enumeration stops being practical past N = 6).

`optimal_assignment` finds the same maximum by dynamic programming over user subsets, which makes
N = 8 (any K) and N = 10 (K <= 2) a fraction of a second to a few seconds. It rests on two facts of the
model. Servers do not interact, so the total is the local users' utility plus, per server, the best
value of the subset it serves. On one server, the first batch B of a queue serving subset S delays
all of S by s t(|B|), so its contribution is max_s [|B| acc(s) - s (t(|B|) Lambda(S) - sum_B
lambda/v)] minus its members' constants, independent of how S \\ B is arranged behind it:
best(S) = max_B [batch(B, S) + best(S \\ B)]. Both recursions run over all pairs (subset, sub-subset):
3^N per server.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from functools import cache

import numpy as np

from policy_models.offload.model import Assignment, Batch, Instance, Layout, score, solve_splits


@cache
def _ordered_partitions(n: int, max_batch: int) -> int:
    if n == 0:
        return 1
    return sum(
        math.comb(n, j) * _ordered_partitions(n - j, max_batch) for j in range(1, min(n, max_batch) + 1)
    )


def count_assignments(n_users: int, n_servers: int, max_batch: int) -> int:
    """How many assignments exist: users to local or a server, each server's users split into an
    ordered sequence of batches of at most `max_batch`."""
    # ways[j] = ways to arrange j given users over the servers seen so far
    ways = [1] + [0] * n_users
    for _ in range(n_servers):
        ways = [
            sum(math.comb(j, i) * ways[j - i] * _ordered_partitions(i, max_batch) for i in range(j + 1))
            for j in range(n_users + 1)
        ]
    return sum(math.comb(n_users, j) * ways[j] for j in range(n_users + 1))


def _ordered_batchings(users: tuple[int, ...], max_batch: int) -> Iterator[list[tuple[int, ...]]]:
    if not users:
        yield []
        return
    for size in range(1, min(len(users), max_batch) + 1):
        for first in itertools.combinations(users, size):
            rest = tuple(u for u in users if u not in first)
            for tail in _ordered_batchings(rest, max_batch):
                yield [first, *tail]


def all_layouts(n_users: int, n_servers: int, max_batch: int) -> Iterator[tuple[tuple[int, ...], Layout]]:
    """Every (local users, per-server ordered batches) placement."""
    for where in itertools.product(range(-1, n_servers), repeat=n_users):
        local = tuple(i for i in range(n_users) if where[i] == -1)
        per_server = [tuple(i for i in range(n_users) if where[i] == k) for k in range(n_servers)]
        for layout in itertools.product(*(list(_ordered_batchings(u, max_batch)) for u in per_server)):
            yield local, layout


def enumerate_optimum(instance: Instance) -> tuple[float, Assignment]:
    """The best total utility by literal enumeration (small instances only)."""
    best_total, best = -math.inf, None
    for local, layout in all_layouts(instance.n_users, instance.n_servers, instance.max_batch):
        assignment = solve_splits(instance, local, layout)
        total = score(instance, assignment).total
        if total > best_total:
            best_total, best = total, assignment
    assert best is not None
    return best_total, best


def _submasks(mask: int) -> list[int]:
    subs, sub = [], mask
    while sub:
        subs.append(sub)
        sub = (sub - 1) & mask
    return subs


def _server_table(
    instance: Instance, server: int, member_sums: dict[str, np.ndarray]
) -> tuple[np.ndarray, list]:
    """best[S]: the best utility part of serving subset S on `server`, and the first batch and its
    split that achieve it."""
    n_masks = 1 << instance.n_users
    size, lam, saving, const = (member_sums[x] for x in ("size", "lam", "saving", "const"))
    acc = instance.accuracy
    grid = np.arange(1, instance.steps + 1, dtype=np.float64)
    times = instance.step_times()[server]
    adapter = instance.adapter_time(server)
    best = np.zeros(n_masks)
    choice: list = [None] * n_masks
    for mask in range(1, n_masks):
        subs = np.array([s for s in _submasks(mask) if size[s] <= instance.max_batch])
        n = size[subs]
        cost = times[n] * lam[mask] - saving[subs]
        values = n[:, None] * acc[1:] - grid * cost[:, None]
        values[n == 1] = acc[0] - grid * cost[n == 1, None] - adapter * lam[mask]
        split = np.argmax(values, axis=1)
        total = values[np.arange(len(subs)), split] - const[subs] + best[mask ^ subs]
        pick = int(np.argmax(total))
        best[mask] = total[pick]
        choice[mask] = (int(subs[pick]), int(split[pick]) + 1)
    return best, choice


def optimal_assignment(instance: Instance) -> Assignment:
    """An assignment of the greatest total utility (exact; 3^N work per server)."""
    n = instance.n_users
    if n > 12:
        raise ValueError("the exact optimum is for small instances (N <= 12)")
    n_masks = 1 << n
    bits = (np.arange(n_masks)[:, None] >> np.arange(n)) & 1
    lam, speed = instance.latency_weight, instance.device_speed
    member_sums = {
        "size": bits.sum(axis=1),
        "lam": bits @ lam,
        "saving": bits @ (lam / speed),
        "const": bits @ (lam * (instance.transfer_s + instance.steps / speed)),
    }
    local_value = bits @ (instance.accuracy[0] - lam * instance.steps / speed)
    tables = [_server_table(instance, k, member_sums) for k in range(instance.n_servers)]
    # reach[k][S]: best utility of users S over local and servers 0..k-1; take[k][S]: server k-1's share.
    reach = [local_value]
    take: list[np.ndarray] = []
    for best, _ in tables:
        previous = reach[-1]
        current, share = np.empty(n_masks), np.zeros(n_masks, dtype=np.int64)
        for mask in range(n_masks):
            subs = np.array([0, *_submasks(mask)])
            totals = previous[mask ^ subs] + best[subs]
            pick = int(np.argmax(totals))
            current[mask], share[mask] = totals[pick], subs[pick]
        reach.append(current)
        take.append(share)
    return _rebuild(instance, tables, take)


def _rebuild(instance: Instance, tables: list, take: list[np.ndarray]) -> Assignment:
    mask = (1 << instance.n_users) - 1
    servers = []
    for k in range(instance.n_servers - 1, -1, -1):
        served = int(take[k][mask])
        mask ^= served
        batches, choice = [], tables[k][1]
        while served:
            first, split = choice[served]
            batches.append((tuple(i for i in range(instance.n_users) if first >> i & 1), split))
            served ^= first
        servers.append(batches)
    servers.reverse()
    local = tuple(i for i in range(instance.n_users) if mask >> i & 1)
    return Assignment(local, tuple(tuple(Batch(users, s) for users, s in batches) for batches in servers))
