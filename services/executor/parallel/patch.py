"""Swap a diffusers UNet's spatial layers for patch-parallel wrappers, and put them back.

`apply_patch_parallel` replaces, in place, every zero-padded Conv2d (3x3 convolutions, the stride-2
downsamplers included), every GroupNorm over spatial maps, and the key/value projections of every
self-attention (`attn1` of the transformer blocks; cross-attention to the text needs nothing). The
returned handle owns the swap: `remove()` puts the very same module objects back, so a warm model can
serve a gang of another size next, or run alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from torch import nn
from torch.utils.hooks import RemovableHandle

from services.executor.parallel.bands import BandPlan, plan_bands
from services.executor.parallel.comm import PatchComm
from services.executor.parallel.layers import (
    MODES,
    GatheredProjection,
    Mode,
    PatchConv2d,
    PatchGroupNorm,
    PatchState,
    StaleExchange,
)

Wrapper = PatchConv2d | PatchGroupNorm | GatheredProjection
WRAPPERS = (PatchConv2d, PatchGroupNorm, GatheredProjection)


@dataclass(frozen=True)
class Swap:
    """`parent.<name>` held `original` before patching."""

    parent: nn.Module
    name: str
    original: nn.Module


@dataclass
class PatchParallelHandle:
    """A UNet running patch-parallel over one gang; `remove()` makes it the plain UNet again."""

    unet: nn.Module
    state: PatchState
    unit: int  # band heights are multiples of this: 2 ** (number of downsamplings)
    swaps: list[Swap]
    exchanges: list[StaleExchange]
    hooks: list[RemovableHandle] = field(default_factory=list)
    removed: bool = False

    @property
    def comm(self) -> PatchComm:
        return self.state.comm

    @property
    def step(self) -> int:
        """Denoising step the next UNet call belongs to (decides fresh or stale in displaced mode)."""
        return self.state.step

    def set_step(self, step: int) -> None:
        """For callers that count steps themselves (apply with auto_step=False)."""
        self.state.step = step

    def begin(self, latent_height: int) -> BandPlan:
        """Start a denoising run on a latent of `latent_height` rows: plan the bands, zero the step
        counter and forget any stale activations of an earlier run."""
        self._check_live()
        if self.comm.world == 1:
            plan = BandPlan(height=latent_height, unit=1, heights=(latent_height,))
        else:
            plan = plan_bands(latent_height, self.comm.world, self.unit)
        self.state.plan = plan
        self.state.step = 0
        for exchange in self.exchanges:
            exchange.reset()
        return plan

    def finish(self) -> None:
        """End a run: complete the displaced all-gathers still in flight (all ranks started them)."""
        for exchange in self.exchanges:
            exchange.finish()

    def remove(self) -> None:
        """Put the original modules back and drop the hooks (idempotent). Pending exchanges are dropped,
        not awaited, so this is safe after a member of the gang has died."""
        if self.removed:
            return
        for swap in reversed(self.swaps):
            setattr(swap.parent, swap.name, swap.original)
        for hook in self.hooks:
            hook.remove()
        for exchange in self.exchanges:
            exchange.reset()
        self.removed = True

    def _check_live(self) -> None:
        if self.removed:
            raise RuntimeError("this patch-parallel handle was removed")


def apply_patch_parallel(
    unet: nn.Module,
    comm: PatchComm,
    mode: Mode = "sync",
    warmup_steps: int = 4,
    *,
    auto_step: bool = True,
) -> PatchParallelHandle:
    """Wrap `unet`'s spatial layers for a gang (`comm`); in a gang of one they run their plain forward.

    With `auto_step` each UNet forward advances the step counter (one call per denoising step, as in a
    classifier-free-guidance batch of 2); otherwise the caller sets it with `handle.set_step`."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if warmup_steps < 0:
        raise ValueError("warmup_steps must be >= 0")
    if any(isinstance(module, WRAPPERS) for module in unet.modules()):
        raise RuntimeError("this UNet is already patch-parallel; remove the other handle first")
    check_splittable(unet)
    state = PatchState(comm=comm, mode=mode, warmup_steps=warmup_steps)
    wrappers = _build_wrappers(unet, state)
    swaps = [
        Swap(parent, name, child)
        for parent in list(unet.modules())
        for name, child in list(parent._modules.items())
        if child is not None and id(child) in wrappers
    ]
    for swap in swaps:
        setattr(swap.parent, swap.name, wrappers[id(swap.original)])
    handle = PatchParallelHandle(
        unet=unet,
        state=state,
        unit=2 ** count_downsamplings(unet),
        swaps=swaps,
        exchanges=[wrapper.exchange for wrapper in wrappers.values()],
    )
    if auto_step:
        handle.hooks.append(unet.register_forward_hook(lambda module, args, output: _advance(state)))
    return handle


def _advance(state: PatchState) -> None:
    state.step += 1


def _build_wrappers(unet: nn.Module, state: PatchState) -> dict[int, Wrapper]:
    """One wrapper per module to swap, keyed by the original's id (a module registered under two names,
    like Downsample2D's `conv` / `Conv2d_0`, gets one wrapper)."""
    text_norms = {
        id(m.norm_cross) for m in unet.modules() if isinstance(m, Attention) and m.norm_cross is not None
    }
    wrappers: dict[int, Wrapper] = {}
    for module in unet.modules():
        if isinstance(module, nn.Conv2d) and _is_padded_vertically(module):
            wrappers[id(module)] = PatchConv2d(module, state)
        elif isinstance(module, nn.GroupNorm) and id(module) not in text_norms:
            wrappers[id(module)] = PatchGroupNorm(module, state)
        elif isinstance(module, Attention) and not module.is_cross_attention:
            for projection in (module.to_k, module.to_v):
                wrappers[id(projection)] = GatheredProjection(projection, state)
    return wrappers


def _is_padded_vertically(conv: nn.Conv2d) -> bool:
    """Convolutions that read rows above or below the output row (1x1 ones are pointwise: left alone;
    taller unpadded ones are wrapped so that `PatchConv2d` refuses them)."""
    return conv.kernel_size[0] > 1 or (not isinstance(conv.padding, str) and conv.padding[0] > 0)


def count_downsamplings(unet: nn.Module) -> int:
    """How many times the UNet halves the latent's height on the way down."""
    return sum(isinstance(module, Downsample2D) for module in unet.modules())


def check_splittable(unet: nn.Module) -> None:
    """Refuse UNets with layers that row bands cannot reproduce exactly."""
    for module in unet.modules():
        if isinstance(module, Downsample2D) and module.use_conv and module.padding == 0:
            # It pads one row at the bottom of the whole map; on bands that row would be every band's.
            raise ValueError("Downsample2D with padding 0 (downsample_padding=0) cannot be split into bands")
        if isinstance(module, Attention):
            if module.fused_projections:
                raise ValueError("fused QKV projections cannot be split; unfuse them first")
            if module.added_kv_proj_dim is not None:
                raise ValueError("attention with added key/value projections is not supported")
