"""Gangs: a torch.distributed process group per task, formed and torn down while models stay loaded.

Rank 0 hosts a `TCPStore` on (host, port); the others connect to it. Keys live under a prefix made from
the group name, which is unique per formation, so a stale member still trying to join an earlier
formation writes where nobody reads and cannot join this one. The process group is built directly on
that store (`ProcessGroupGloo` / `ProcessGroupNCCL`), never registered as torch's default group, so one
process can belong to any number of successive gangs of different sizes and members. Collectives time
out after `timeout_s`, so a member that dies or hangs fails the others with `GangMemberLost`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import torch
import torch.distributed as dist

from services.executor.parallel.comm import PatchComm
from services.executor.parallel.errors import GangFormationError

STORE_PREFIX = "eat/gang/"
BACKENDS = ("gloo", "nccl")


@dataclass
class Gang:
    """One formation of a gang: this member's rank, the group and (on rank 0) the store it hosts."""

    name: str
    rank: int
    world: int
    backend: str
    timeout_s: float
    group: dist.ProcessGroupGloo | dist.ProcessGroupNCCL | None
    store: dist.Store | None
    closed: bool = False

    @property
    def comm(self) -> PatchComm:
        """The collectives of this gang, for `apply_patch_parallel`."""
        if self.closed:
            raise RuntimeError(f"gang {self.name!r} is closed")
        return PatchComm(
            self.group,
            self.rank,
            self.world,
            name=self.name,
            timeout_s=self.timeout_s,
            blocking_wait=self.backend == "gloo",
        )

    def close(self) -> None:
        """Tear the group down (idempotent). Never waits for other members, so it cannot hang when one
        has died; models and layers are not touched."""
        if self.closed:
            return
        self.closed = True
        group, self.group = self.group, None
        if group is not None:
            # Shut the backend down before the store goes away: its threads and sockets stop here rather
            # than whenever the garbage collector gets to them.
            group.shutdown()
        self.store = None

    def __enter__(self) -> Gang:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def form_gang(
    host: str,
    port: int,
    group_name: str,
    rank: int,
    world: int,
    timeout_s: float,
    backend: str = "gloo",
) -> Gang:
    """Meet the other `world - 1` members at rank 0's store on (host, port) and form a process group.

    Blocks until all have joined; raises `GangFormationError` if they do not within `timeout_s` (or the
    store cannot start). A gang of one needs no rendezvous and has no group."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a gang of {world}")
    if not group_name:
        raise ValueError("a gang needs a group name, unique per formation")
    if world == 1:
        return Gang(group_name, 0, 1, backend, timeout_s, group=None, store=None)
    timeout = timedelta(seconds=timeout_s)
    try:
        store = dist.TCPStore(host, port, None, rank == 0, timeout, wait_for_workers=False)
        scoped = dist.PrefixStore(STORE_PREFIX + group_name + "/", store)
        group = _process_group(backend, scoped, rank, world, timeout)
    except RuntimeError as err:
        raise GangFormationError(
            f"gang {group_name!r}: rank {rank} of {world} could not form the group at {host}:{port} "
            f"within {timeout_s:g}s: {err}"
        ) from err
    # Rank 0 keeps the store (it serves the others); the rest only needed it to meet.
    return Gang(group_name, rank, world, backend, timeout_s, group=group, store=store if rank == 0 else None)


def _process_group(
    backend: str, store: dist.Store, rank: int, world: int, timeout: timedelta
) -> dist.ProcessGroupGloo | dist.ProcessGroupNCCL:
    """A backend built straight on the store: no default group, no global registry, no new_group."""
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world, timeout)
    if not torch.cuda.is_available():
        raise GangFormationError("backend 'nccl' needs CUDA")
    group = dist.ProcessGroupNCCL(store, rank, world, timeout)
    # NCCL connects lazily; connect now so a missing member shows up here, not in the first layer.
    group.eager_connect_single_device(torch.device("cuda", torch.cuda.current_device()))
    return group
