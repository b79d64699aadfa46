"""Paper-mode group state of a small cluster, stepped by table lookups (for BatchedClusterSim).

In paper mode the gang selection and the reload rule look only at which servers form intact loaded
groups and which model each group holds. With a few servers that state takes few values (44 for N=4
and one model), so the batched simulator can keep one state number per environment and step it by
lookups indexed by (state, idle servers as bits, task key), instead of a few dozen array operations
over servers. The tables come from running the rule book itself (`selector.select_gang_paper` and
`selector.replace_groups`) on every reachable state; bigger clusters, whose state space explodes, keep
the array code. A task's key is patches * (n_models + 1) + model, as in `TokenTables`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from policy_models.config import SimConfig
from policy_models.selector import group_sizes, replace_groups, select_gang_paper

MAX_SERVERS = 5  # the search visits every idle subset: 2**N of them per state
MAX_STATES = 256  # past this many reachable states the tables cost more than they save
MAX_KEYS = 63  # keys of idle groups are bits of one int64

State = tuple[tuple[int, ...], tuple[int, ...]]  # (group leader per server, group model per server)
Launch = tuple[int, bool, State]  # (the gang as bits, whether it reuses a group, the state after)


@dataclass(frozen=True)
class GroupTable:
    n_servers: int
    n_keys: int
    leader: np.ndarray  # (S, N) leader of each server's group, -1 = none
    member_key: np.ndarray  # (S, N) key of each server's group, 0 = none
    # Indexed by (state << N | idle bits) * n_keys + task key; all 0 where the task does not fit:
    members: np.ndarray  # int64: the gang as bits (bit n = server n)
    reused: np.ndarray  # bool: the gang is an idle intact group holding the task's model
    next_state: np.ndarray  # int64
    # Indexed by state << N | idle bits:
    reusable_keys: np.ndarray  # int64: bit `key` set when an idle intact group has that key

    @staticmethod
    def for_config(cfg: SimConfig) -> GroupTable | None:
        """The tables of a paper-mode config, or None when the state space is too big for them."""
        n_keys = (cfg.max_patches + 1) * (cfg.n_models + 1)
        if cfg.mode != "paper" or cfg.n_servers > MAX_SERVERS or n_keys > MAX_KEYS:
            return None
        return _build(cfg.n_servers, cfg.patch_choices, cfg.n_models)


@cache
def _build(n: int, patch_choices: tuple[int, ...], n_models: int) -> GroupTable | None:
    per_size = n_models + 1
    task_keys = [(k * per_size + m, k, m) for k in patch_choices for m in range(1, n_models + 1)]
    found = _search(n, task_keys)
    if found is None:
        return None
    states, launches = found
    number = {state: i for i, state in enumerate(states)}
    leader = np.array([group for group, _ in states], dtype=np.int64).reshape(len(states), n)
    member_key = np.zeros_like(leader)
    for i, (group, model) in enumerate(states):
        sizes = group_sizes(group)
        member_key[i] = [sizes[g] * per_size + m if g >= 0 else 0 for g, m in zip(group, model, strict=True)]
    n_keys = (max(patch_choices) + 1) * per_size
    shape = (len(states) << n, n_keys)
    members, reused = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=bool)
    next_state = np.zeros(shape, dtype=np.int64)
    for (i, bits, key), (gang, reuse, after) in launches.items():
        members[i << n | bits, key], reused[i << n | bits, key] = gang, reuse
        next_state[i << n | bits, key] = number[after]
    reusable_keys = np.ones(len(states) << n, dtype=np.int64)  # bit 0, "no group", always set
    for i in range(len(states)):
        for bits in range(1 << n):
            for s in range(n):
                if leader[i, s] == s and (bits >> s) & 1:
                    reusable_keys[i << n | bits] |= 1 << int(member_key[i, s])
    return GroupTable(
        n_servers=n,
        n_keys=n_keys,
        leader=leader,
        member_key=member_key,
        members=members.ravel(),
        reused=reused.ravel(),
        next_state=next_state.ravel(),
        reusable_keys=reusable_keys,
    )


def _search(
    n: int, task_keys: list[tuple[int, int, int]]
) -> tuple[list[State], dict[tuple[int, int, int], Launch]] | None:
    """Every group state launches can reach from the empty cluster (breadth first), with every launch
    from each: {(state number, idle bits, task key): launch}. None past MAX_STATES states."""
    start: State = ((-1,) * n, (0,) * n)
    states, seen = [start], {start}
    launches: dict[tuple[int, int, int], Launch] = {}
    for i, state in enumerate(states):  # grows while we iterate
        for bits in range(1 << n):
            idle = [(bits >> s) & 1 == 1 for s in range(n)]
            for key, k, m in task_keys:
                if sum(idle) < k:
                    continue
                launches[i, bits, key] = launch = _launch(state, idle, k, m)
                if launch[2] not in seen:
                    if len(states) == MAX_STATES:
                        return None
                    seen.add(launch[2])
                    states.append(launch[2])
    return states, launches


def _launch(state: State, idle: list[bool], k: int, m: int) -> Launch:
    group, model = state
    gang = select_gang_paper(k, m, idle, group, model)
    assert gang is not None, "the caller checks that k servers are idle"
    after = state
    if not gang.reused:
        new_group, new_model = replace_groups(group, model, gang.members, m)
        after = (tuple(new_group), tuple(new_model))
    return sum(1 << s for s in gang.members), gang.reused, after
