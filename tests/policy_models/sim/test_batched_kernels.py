"""The batched simulator's array helpers agree with the NumPy operations they stand for."""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config
from policy_models.sim.batched import INT_MAX, first_k, first_max, numpy_order_sum
from policy_models.sim.group_table import GroupTable


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 10, 15, 16, 17, 32, 33, 100, 128, 129, 300])
def test_numpy_order_sum_matches_a_row_sum_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    rows = rng.random((200, n)) * rng.choice([1e-3, 1.0, 1e3], (200, n))
    rows[rng.random((200, n)) < 0.3] = 0.0
    np.testing.assert_array_equal(numpy_order_sum(np.ascontiguousarray(rows.T)), rows.sum(axis=1))


def test_first_max_is_argmax_with_ties_to_the_first_row() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-3, 3, (10, 500)).astype(np.float64)  # many ties
    values[:, :7] = -np.inf  # whole columns without a candidate give row 0, like argmax
    np.testing.assert_array_equal(first_max(values), values.argmax(axis=0))


@pytest.mark.parametrize("n", [2, 4, 16, 17, 40])
def test_first_k_takes_the_k_smallest(n: int) -> None:
    rng = np.random.default_rng(n)
    cols = 300
    order = np.stack([rng.permutation(10 * n)[:n] for _ in range(cols)], axis=1)
    busy = rng.random((n, cols)) < 0.3
    order[busy] = INT_MAX  # repeated, never chosen
    k = np.minimum(rng.integers(1, n + 1, cols), (~busy).sum(0))
    keep = k > 0
    chosen = first_k(order[:, keep], k[keep])
    expected = np.zeros_like(chosen)
    ranks = np.argsort(np.argsort(order[:, keep], axis=0, kind="stable"), axis=0, kind="stable")
    expected[ranks < k[keep]] = True
    np.testing.assert_array_equal(chosen, expected)


def test_group_tables_exist_for_small_paper_clusters_only() -> None:
    table = GroupTable.for_config(paper_config(4, 0.05))
    assert table is not None and table.leader.shape == (44, 4)  # the reachable group states
    assert (table.leader[0] == -1).all(), "state 0 is the cluster without groups"
    assert GroupTable.for_config(paper_config(8, 0.1)) is None
    assert GroupTable.for_config(paper_config(4, 0.05, n_models=3)) is None  # too many states
    assert GroupTable.for_config(SimConfig(n_servers=4, mode="warm", n_models=2, models_per_server=2)) is None
