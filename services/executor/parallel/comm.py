"""The collectives patch parallelism needs, over one gang's process group.

Only all-gather is used (halo rows, GroupNorm statistics, keys and values): one collective kind keeps
every rank issuing the same operations in the same order, works the same on gloo and NCCL, and needs no
point-to-point channels per pair of members. Every failure of a collective, at launch or at wait, comes
out as `GangMemberLost` naming the gang, so a dead member fails the others fast instead of hanging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from services.executor.parallel.errors import GangMemberLost


class PatchComm:
    """All-gathers over `group` for a member of rank `rank` in a gang of `world` (group None: alone)."""

    def __init__(
        self,
        group: dist.ProcessGroupGloo | dist.ProcessGroupNCCL | None,
        rank: int,
        world: int,
        *,
        name: str = "single",
        timeout_s: float = 30.0,
        blocking_wait: bool = True,
    ) -> None:
        if (group is None) != (world == 1):
            raise ValueError("a gang of more than one member needs a process group, and only it")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a gang of {world}")
        self.group = group
        self.rank = rank
        self.world = world
        self.name = name
        self.timeout = timedelta(seconds=timeout_s)
        # gloo: wait() blocks the CPU, bounded by the timeout. NCCL: wait() only orders the compute stream
        # after the collective, so the CPU keeps queueing kernels; its timeout is the process group's own.
        self.blocking_wait = blocking_wait

    @classmethod
    def single(cls) -> PatchComm:
        """A gang of one: nothing is exchanged and the wrapped layers run their plain forward."""
        return cls(None, 0, 1)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (same shape on all ranks), in rank order; blocks until done."""
        return self._launch(tensor.detach().contiguous()).wait()

    def all_gather_async(self, tensor: torch.Tensor) -> PendingGather:
        """Start an all-gather and return at once; `.wait()` on the result gives the tensors.

        The input is copied first, so the caller may keep using (or reusing) its tensor meanwhile."""
        return self._launch(tensor.detach().contiguous().clone())

    def _launch(self, sent: torch.Tensor) -> PendingGather:
        if self.group is None:
            return PendingGather(self, None, [sent])
        received = [torch.empty_like(sent) for _ in range(self.world)]
        try:
            work = self.group.allgather([received], [sent])
        except RuntimeError as err:
            raise self.member_lost(err) from err
        return PendingGather(self, work, received, sent)

    def gather_along(self, tensor: torch.Tensor, dim: int, sizes: Sequence[int]) -> torch.Tensor:
        """Concatenate every rank's `tensor` along `dim`, where rank i's has size `sizes[i]` there."""
        return concat_trimmed(self.all_gather(pad_to(tensor, dim, max(sizes))), dim, sizes)

    def member_lost(self, err: BaseException) -> GangMemberLost:
        seconds = self.timeout.total_seconds()
        return GangMemberLost(
            f"gang {self.name!r} (rank {self.rank} of {self.world}): a collective failed; a member died, "
            f"left or did not answer within {seconds:g}s: {err}"
        )


@dataclass
class PendingGather:
    """An all-gather in flight; `wait` returns the gathered tensors (and keeps returning them)."""

    comm: PatchComm
    work: dist.Work | None
    received: list[torch.Tensor]
    # Held so the send buffer lives until the collective has read it.
    sent: torch.Tensor | None = None
    done: bool = False

    def wait(self) -> list[torch.Tensor]:
        if self.work is not None and not self.done:
            try:
                if self.comm.blocking_wait:
                    self.work.wait(self.comm.timeout)
                else:
                    self.work.wait()
            except RuntimeError as err:
                raise self.comm.member_lost(err) from err
            self.done = True
            self.sent = None
        return self.received


def pad_to(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`tensor` zero-padded at the end of `dim` to `size` (all-gather needs equal shapes)."""
    missing = size - tensor.shape[dim]
    if missing == 0:
        return tensor
    padding_shape = list(tensor.shape)
    padding_shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(padding_shape)], dim=dim)


def concat_trimmed(parts: Sequence[torch.Tensor], dim: int, sizes: Sequence[int]) -> torch.Tensor:
    """Concatenate `parts` along `dim`, keeping the first `sizes[i]` entries of part i."""
    return torch.cat([part.narrow(dim, 0, size) for part, size in zip(parts, sizes, strict=True)], dim=dim)
