"""Action decoding and gang (server) selection, scalar form.

This is the rule book the live aggregator follows and the single environment runs; the batched
simulator implements the same rules with array code and is tested to agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


def decode_execute(flag: float) -> bool:
    """Start a task only on a strictly positive flag (the reference treated exactly -1 as true)."""
    return flag > 0.0


def decode_steps(value: float, min_steps: int, max_steps: int) -> int:
    """Map [-1, 1] linearly onto [min_steps, max_steps], rounding half up; the ends are reachable."""
    x = min_steps + (value + 1.0) * 0.5 * (max_steps - min_steps)
    return min(max(math.floor(x + 0.5), min_steps), max_steps)


def choose_task(scores: Sequence[float], candidates: Sequence[bool]) -> int:
    """Slot of the best-scoring candidate task (lowest slot on ties); -1 when there is none."""
    best, best_score = -1, -math.inf
    for slot, ok in enumerate(candidates):
        if ok and scores[slot] > best_score:
            best, best_score = slot, scores[slot]
    return best


class Gang(NamedTuple):
    members: tuple[int, ...]
    reused: bool  # True when no model load is needed


def select_gang_paper(
    patches: int, model: int, idle: Sequence[bool], group: Sequence[int], group_model: Sequence[int]
) -> Gang | None:
    """Paper rule (EAT V-B4): reuse an idle intact group of exactly `patches` servers holding `model`;
    otherwise take idle servers outside loaded groups first, then break as few loaded servers as we
    can: the smallest group that covers the remainder alone, else the largest groups first (a group
    taken whole wastes nothing; only the last, partly taken one loses servers).

    group[n] is the leader (lowest member index) of the intact loaded group server n belongs to, or -1.
    A group's members start and finish together, so they are all idle or all busy.
    """
    size = group_sizes(group)
    for leader in sorted(size):
        if size[leader] == patches and idle[leader] and group_model[leader] == model:
            return Gang(tuple([n for n, g in enumerate(group) if g == leader]), reused=True)
    free = [n for n, ok in enumerate(idle) if ok]
    if len(free) < patches:
        return None
    loose = [n for n in free if group[n] < 0]
    remainder = patches - len(loose)
    if remainder <= 0:
        return Gang(tuple(loose[:patches]), reused=False)
    n_servers = len(idle)
    # Sorted by (rank, group, server): the tuples sort like the key the rule names.
    grouped = sorted(
        (_group_rank(size[group[n]], remainder, n_servers), group[n], n) for n in free if group[n] >= 0
    )
    return Gang(tuple(sorted(loose + [n for *_, n in grouped[:remainder]])), reused=False)


def replace_groups(
    group: Sequence[int], group_model: Sequence[int], members: Sequence[int], model: int
) -> tuple[list[int], list[int]]:
    """Paper reload rule: a gang that loads `model` becomes a new intact group led by its lowest
    member, and its processes replace every group its members belonged to (those dissolve whole).
    Returns the new (group, group_model) lists."""
    touched = {group[n] for n in members if group[n] >= 0}
    new_group = [-1 if g in touched else g for g in group]
    new_model = [0 if g in touched else m for g, m in zip(group, group_model, strict=True)]
    leader = min(members)
    for n in members:
        new_group[n], new_model[n] = leader, model
    return new_group, new_model


def group_sizes(group: Sequence[int]) -> dict[int, int]:
    """Size of each intact loaded group, by leader (group[n] = leader of server n's group or -1)."""
    size: dict[int, int] = {}
    for g in group:
        if g >= 0:
            size[g] = size.get(g, 0) + 1
    return size


def _group_rank(size: int, remainder: int, n_servers: int) -> int:
    """Order in which idle loaded groups are broken: covering groups by ascending size, then the rest
    by descending size. Ranks lie in [0, 2 * n_servers]."""
    return size if size >= remainder else 2 * n_servers - size


def warm_key(holds: bool, free_slot: bool, speed_frac: float) -> float:
    """Preference of a server for a warm-mode gang: holders first (fastest first), then servers with a
    free model slot (no eviction), then by speed. speed_frac is speed / (max speed * 2), in (0, 0.5]."""
    return 4.0 * holds + 2.0 * (free_slot and not holds) + speed_frac


def select_gang_warm(
    patches: int,
    idle: Sequence[bool],
    holds: Sequence[bool],
    free_slot: Sequence[bool],
    speed: Sequence[float],
) -> Gang | None:
    """Warm rule: any gang whose members all hold the model reuses it (only a group setup); the
    fastest such gang wins. Otherwise members that lack the model load it, preferring servers with a
    free slot so fewer resident models are evicted."""
    free = [n for n, ok in enumerate(idle) if ok]
    if len(free) < patches:
        return None
    scale = 2.0 * max(speed)
    keys = {n: warm_key(holds[n], free_slot[n], speed[n] / scale) for n in free}
    # Sort by descending key, then ascending index (a stable sort of indices already in order).
    free.sort(key=lambda n: -keys[n])
    members = tuple(sorted(free[:patches]))
    return Gang(members, reused=all(holds[n] for n in members))
