"""How a latent is cut into row bands, one per gang member.

A rank runs the UNet on rows [start, stop) of the latent. Every band starts on a multiple of
`unit` = 2**(number of stride-2 downsamplings), so at every resolution level a band is a whole number
of rows and starts on a row that the stride-2 convolutions of the unsplit UNet also start from: the
band's downsampled rows are exactly the unsplit model's rows. Heights that do not split evenly over
the gang give the first bands one unit more than the last ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BandPlan:
    """Row bands of a latent of `height` rows, in rank order; `unit` divides every band height."""

    height: int
    unit: int
    heights: tuple[int, ...]

    @property
    def world(self) -> int:
        return len(self.heights)

    def start(self, rank: int) -> int:
        return sum(self.heights[:rank])

    def rows(self, rank: int) -> slice:
        """Rows of the full latent that `rank` owns."""
        start = self.start(rank)
        return slice(start, start + self.heights[rank])

    def sizes_like(self, rank: int, local_size: int) -> tuple[int, ...]:
        """Every rank's size of a dimension that scales with band height, given `rank`'s `local_size`.

        At any resolution level a band's rows (and its tokens, rows x width) are proportional to its
        latent rows, so the others' sizes follow from ours without asking them."""
        own = self.heights[rank]
        if any(local_size * height % own for height in self.heights):
            raise ValueError(f"size {local_size} is not proportional to band height {own}")
        return tuple(local_size * height // own for height in self.heights)


def plan_bands(height: int, world: int, unit: int) -> BandPlan:
    """Split `height` latent rows into `world` contiguous bands whose heights are multiples of `unit`.

    Raises ValueError when `height` is not a multiple of `unit` (the unsplit UNet itself then needs
    interpolation to odd sizes, which row bands cannot reproduce) or when there are fewer units of rows
    than members (a member would get an empty band)."""
    if world < 1 or unit < 1:
        raise ValueError(f"world ({world}) and unit ({unit}) must be positive")
    if height % unit:
        raise ValueError(f"latent height {height} is not a multiple of {unit} (2 ** downsampling levels)")
    units = height // unit
    if units < world:
        raise ValueError(
            f"latent height {height} has {units} bands of {unit} rows, fewer than {world} members"
        )
    base, extra = divmod(units, world)
    heights = tuple((base + (1 if rank < extra else 0)) * unit for rank in range(world))
    return BandPlan(height=height, unit=unit, heights=heights)
