"""The layer wrappers of patch parallelism, and the state they share.

Each wrapper holds the original module (`inner`) and, in a gang of one, simply calls it. In a larger
gang the input is this rank's row band and the wrapper supplies what the band lacks from the others:

- `PatchConv2d`: the `padding` rows above and below the band (halo), from the neighbouring bands, or
  zeros at the image border exactly as the unsplit convolution's zero padding.
- `PatchGroupNorm`: per-sample, per-group mean and variance of the whole latent, combined from every
  band's count, mean and variance (Chan's parallel formula: the band-size-weighted mean and E[x^2],
  without the cancellation of subtracting large squares).
- `GatheredProjection` (a self-attention's `to_k` / `to_v`): the keys or values of every band, so
  local queries attend over the whole latent.

All three exchange through a `StaleExchange`, which in `displaced` mode, after the warm-up steps,
returns the previous step's tensors of the other bands and starts this step's all-gather without
waiting for it, so the communication overlaps the rest of the UNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from services.executor.parallel.bands import BandPlan
from services.executor.parallel.comm import PatchComm, PendingGather, concat_trimmed, pad_to

Mode = Literal["sync", "displaced"]
MODES: tuple[Mode, ...] = ("sync", "displaced")


@dataclass
class PatchState:
    """What every wrapper of one UNet shares: the gang, the mode, the denoising step and the bands."""

    comm: PatchComm
    mode: Mode
    warmup_steps: int
    step: int = 0
    plan: BandPlan | None = None

    @property
    def parallel(self) -> bool:
        return self.comm.world > 1

    @property
    def rank(self) -> int:
        return self.comm.rank

    def band_plan(self) -> BandPlan:
        if self.plan is None:
            raise RuntimeError("call handle.begin(latent_height) before running the UNet on a band")
        return self.plan


class StaleExchange:
    """One layer's all-gather: fresh every time in `sync` mode; in `displaced` mode fresh for the
    warm-up steps, then one step old, with this step's gather left in flight until the next step."""

    def __init__(self, state: PatchState) -> None:
        self.state = state
        self._previous: list[torch.Tensor] | None = None
        self._pending: PendingGather | None = None
        self._last_step = -1

    def gather(self, local: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `local`, in rank order (the caller replaces its own entry with a fresh one)."""
        state = self.state
        if state.mode == "sync":
            return state.comm.all_gather(local)
        if self._last_step == state.step:
            raise RuntimeError("a displaced layer ran twice in one step; advance the step between UNet calls")
        self._last_step = state.step
        if state.step >= state.warmup_steps:
            stale = self._previous if self._pending is None else self._pending.wait()
            if stale is not None:
                self._pending = state.comm.all_gather_async(local)  # awaited at this layer next step
                self._previous = None
                return stale
        # Warm-up, or no history yet (warmup_steps=0): fresh, and kept for the first stale step.
        self._previous = state.comm.all_gather(local)
        return self._previous

    def finish(self) -> None:
        """Complete the gather still in flight (every rank started it, so this does not wait long)."""
        if self._pending is not None:
            self._pending.wait()
        self.reset()

    def reset(self) -> None:
        self._previous = None
        self._pending = None
        self._last_step = -1


class PatchConv2d(nn.Module):
    """A zero-padded Conv2d run on a row band with the neighbours' rows as its vertical padding."""

    def __init__(self, inner: nn.Conv2d, state: PatchState) -> None:
        super().__init__()
        check_band_conv(inner)
        self.inner = inner
        self.state = state
        self.exchange = StaleExchange(state)
        self.halo = int(inner.padding[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.state.parallel:
            return self.inner(x)
        above, below = self._halos(x)
        padded = torch.cat([above, x, below], dim=2)
        conv = self.inner
        return F.conv2d(
            padded, conv.weight, conv.bias, conv.stride, (0, conv.padding[1]), conv.dilation, conv.groups
        )

    def _halos(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The `halo` rows just above and just below this band (zeros beyond the image)."""
        halo, rank, world = self.halo, self.state.rank, self.state.comm.world
        if x.shape[2] < halo:
            raise ValueError(f"a band of {x.shape[2]} rows is thinner than the {halo}-row halo it must lend")
        edges = torch.cat([x[:, :, :halo], x[:, :, -halo:]], dim=2)  # this band's top rows, then bottom
        gathered = self.exchange.gather(edges)
        above = gathered[rank - 1][:, :, halo:] if rank > 0 else torch.zeros_like(edges[:, :, :halo])
        below = gathered[rank + 1][:, :, :halo] if rank < world - 1 else torch.zeros_like(edges[:, :, halo:])
        return above, below


def check_band_conv(conv: nn.Conv2d) -> None:
    """Refuse convolutions whose output rows would not line up with the bands' rows.

    With stride s and bands of a multiple of s rows starting on a multiple of s, the band's output is
    exactly the unsplit output's rows for the band when (kernel extent) + 1 - s <= 2 * padding <= extent;
    SD's 3x3 convolutions (padding 1, stride 1 or 2) satisfy it."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"cannot split {conv}: only numeric zero padding is supported")
    extent = conv.dilation[0] * (conv.kernel_size[0] - 1)
    if not extent + 1 - conv.stride[0] <= 2 * conv.padding[0] <= extent:
        raise ValueError(f"cannot split {conv}: its padding does not keep band rows aligned")


class PatchGroupNorm(nn.Module):
    """GroupNorm whose statistics cover the whole latent, not just this band."""

    def __init__(self, inner: nn.GroupNorm, state: PatchState) -> None:
        super().__init__()
        self.inner = inner
        self.state = state
        self.exchange = StaleExchange(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.state.parallel:
            return self.inner(x)
        norm = self.inner
        grouped = x.reshape(x.shape[0], norm.num_groups, -1).float()
        var, mean = torch.var_mean(grouped, dim=-1, correction=0)
        local = torch.stack([torch.full_like(mean, grouped.shape[-1]), mean, var], dim=-1)
        gathered = list(self.exchange.gather(local))
        gathered[self.state.rank] = local  # own statistics always fresh
        mean, var = combine_group_stats(torch.stack(gathered))
        normalized = (grouped - mean.unsqueeze(-1)) * torch.rsqrt(var.unsqueeze(-1) + norm.eps)
        normalized = normalized.reshape(x.shape).to(x.dtype)
        if not norm.affine:
            return normalized
        channel_shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
        return normalized * norm.weight.view(channel_shape) + norm.bias.view(channel_shape)


def combine_group_stats(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance of the union of parts, from `stats[..., (count, mean, variance)]`
    stacked over parts along dim 0."""
    count, mean, var = stats.unbind(-1)
    total = count.sum(0)
    union_mean = (count * mean).sum(0) / total
    union_var = (count * (var + (mean - union_mean) ** 2)).sum(0) / total
    return union_mean, union_var


class GatheredProjection(nn.Module):
    """A self-attention's key or value projection that returns the projections of every band's tokens
    (this band's fresh), concatenated in row order; queries stay local."""

    def __init__(self, inner: nn.Module, state: PatchState) -> None:
        super().__init__()
        self.inner = inner
        self.state = state
        self.exchange = StaleExchange(state)

    @property
    def weight(self) -> torch.Tensor:  # some attention processors read the projection's dtype from it
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.inner.bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        local = self.inner(hidden_states)
        if not self.state.parallel:
            return local
        if local.dim() != 3:
            raise ValueError(
                f"expected (batch, tokens, channels) projections, got shape {tuple(local.shape)}"
            )
        rank = self.state.rank
        sizes = self.state.band_plan().sizes_like(rank, local.shape[1])
        parts = list(self.exchange.gather(pad_to(local, 1, max(sizes))))
        parts[rank] = local
        return concat_trimmed(parts, 1, sizes)
