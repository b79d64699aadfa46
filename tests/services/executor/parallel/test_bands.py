"""Band planning and the pure pieces of the exchanges (no processes, no model)."""

from __future__ import annotations

import pytest
import torch

from services.executor.parallel import PatchComm, plan_bands
from services.executor.parallel.comm import concat_trimmed, pad_to
from services.executor.parallel.layers import combine_group_stats


def test_even_split_gives_equal_bands_in_row_order() -> None:
    plan = plan_bands(64, 4, 8)
    assert plan.heights == (16, 16, 16, 16)
    assert [plan.rows(rank) for rank in range(4)] == [
        slice(0, 16),
        slice(16, 32),
        slice(32, 48),
        slice(48, 64),
    ]


@pytest.mark.parametrize(("height", "world", "unit"), [(18, 4, 2), (16, 3, 2), (72, 8, 8), (40, 3, 4)])
def test_uneven_split_keeps_every_band_a_multiple_of_the_unit(height: int, world: int, unit: int) -> None:
    plan = plan_bands(height, world, unit)
    assert sum(plan.heights) == height
    assert all(band % unit == 0 and band > 0 for band in plan.heights)
    assert max(plan.heights) - min(plan.heights) == unit  # as even as whole units allow
    assert list(plan.heights) == sorted(plan.heights, reverse=True)


def test_heights_that_are_not_whole_units_or_too_short_are_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of 8"):
        plan_bands(60, 2, 8)
    with pytest.raises(ValueError, match="fewer than 4 members"):
        plan_bands(24, 4, 8)


def test_sizes_of_other_bands_follow_from_our_own() -> None:
    plan = plan_bands(18, 4, 2)  # rows 6, 4, 4, 4
    # At half resolution with width 8, rank 1 holds 2 rows x 8 = 16 tokens.
    assert plan.sizes_like(1, 16) == (24, 16, 16, 16)
    with pytest.raises(ValueError):
        plan.sizes_like(1, 3)


def test_combined_group_statistics_equal_those_of_the_whole() -> None:
    generator = torch.Generator().manual_seed(0)
    whole = torch.randn(2, 4, 30, generator=generator) * 3 + 5
    parts = whole.split([12, 10, 8], dim=-1)
    stats = torch.stack(
        [
            torch.stack(
                [torch.full(p.shape[:2], float(p.shape[-1])), p.mean(-1), p.var(-1, correction=0)], -1
            )
            for p in parts
        ]
    )
    mean, var = combine_group_stats(stats)
    torch.testing.assert_close(mean, whole.mean(-1))
    torch.testing.assert_close(var, whole.var(-1, correction=0))


def test_padding_and_trimming_round_trip_unequal_parts() -> None:
    parts = [torch.arange(6.0).view(1, 3, 2), torch.arange(4.0).view(1, 2, 2)]
    padded = [pad_to(part, 1, 3) for part in parts]
    assert all(part.shape == (1, 3, 2) for part in padded)
    torch.testing.assert_close(concat_trimmed(padded, 1, [3, 2]), torch.cat(parts, 1))


def test_a_gang_of_one_gathers_only_itself() -> None:
    comm = PatchComm.single()
    tensor = torch.randn(2, 3)
    (gathered,) = comm.all_gather(tensor)
    assert torch.equal(gathered, tensor)
    with pytest.raises(ValueError):
        PatchComm(None, 0, 2)
