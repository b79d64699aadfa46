"""Attention and flat encoders: shapes for any cluster size, symmetries, padding, real observations."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from policy_models.config import SimConfig
from policy_models.nets import AttentionEncoder, FlatEncoder, as_tensors
from policy_models.obs import ObservationSpec
from policy_models.sim.env import ClusterEnv
from tests.policy_models.nets.helpers import D_MODEL, attention_encoder, permute_tasks, random_obs

SIZES = [(4, 10), (12, 3), (8, 1), (1, 6)]


@pytest.mark.parametrize(("n", "q"), SIZES)
def test_one_attention_encoder_serves_any_cluster_size(n: int, q: int) -> None:
    encoder = attention_encoder()
    obs = random_obs(3, n, q)
    pooled, tokens, valid, feasible, hint = encoder(obs)
    assert pooled.shape == (3, D_MODEL)
    assert tokens is not None and tokens.shape == (3, q, D_MODEL)
    assert valid.dtype == torch.bool and valid.shape == (3, q)
    assert torch.equal(valid, obs["tasks"][..., 0] > 0.5)
    assert not (feasible & ~valid).any()
    assert torch.isfinite(pooled).all() and torch.isfinite(tokens).all()
    assert hint is None  # an encoder built without hint=True reads none


def test_task_tokens_are_permutation_equivariant_and_pooled_invariant() -> None:
    encoder = attention_encoder()
    obs = random_obs(2, 4, 10, n_valid=7)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))  # mixes padding among tasks
    base, permuted = encoder(obs), encoder(permute_tasks(obs, order))
    assert base.task_tokens is not None and permuted.task_tokens is not None
    torch.testing.assert_close(permuted.task_tokens, base.task_tokens[:, order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted.pooled, base.pooled, atol=1e-5, rtol=1e-5)
    assert torch.equal(permuted.task_valid, base.task_valid[:, order])


def test_pooled_feature_ignores_server_order() -> None:
    encoder = attention_encoder()
    obs = random_obs(2, 12, 3)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    shuffled = {**obs, "servers": obs["servers"][:, order]}
    base, permuted = encoder(obs), encoder(shuffled)
    torch.testing.assert_close(permuted.pooled, base.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted.task_tokens, base.task_tokens, atol=1e-5, rtol=1e-5)


def test_padding_slots_do_not_change_the_state() -> None:
    encoder = attention_encoder()
    obs = random_obs(2, 4, 10, n_valid=4)
    base = encoder(obs)
    garbage = obs["tasks"].clone()
    garbage[:, 4:, 1:] = torch.rand(2, 6, garbage.shape[-1] - 1) * 5.0  # "valid" column stays 0
    noisy = encoder({**obs, "tasks": garbage})
    torch.testing.assert_close(noisy.pooled, base.pooled)
    torch.testing.assert_close(noisy.task_tokens[:, :4], base.task_tokens[:, :4])
    longer = torch.cat([obs["tasks"], torch.zeros(2, 5, obs["tasks"].shape[-1])], dim=1)
    torch.testing.assert_close(encoder({**obs, "tasks": longer}).pooled, base.pooled, atol=1e-6, rtol=1e-5)


def test_no_valid_task_gives_a_finite_state() -> None:
    pooled, tokens, valid, *_ = attention_encoder()(random_obs(2, 4, 5, n_valid=0))
    assert not valid.any()
    assert torch.isfinite(pooled).all() and tokens is not None and torch.isfinite(tokens).all()


def test_encoders_read_real_observations_batched_or_not() -> None:
    cfg = SimConfig()
    obs, _ = ClusterEnv(cfg).reset(seed=3)
    tensors = as_tensors(obs)
    assert tensors["servers"].shape == (1, cfg.n_servers, obs["servers"].shape[-1])
    assert np.shares_memory(tensors["tasks"].numpy(), obs["tasks"])  # zero-copy
    encoder = attention_encoder()
    assert encoder(tensors).pooled.shape == (1, D_MODEL)
    flat = FlatEncoder(ObservationSpec.from_config(cfg).shapes, hidden=64)
    pooled, tokens, valid, *_ = flat(tensors)
    assert pooled.shape == (1, 64) and tokens is None and valid.shape == (1, cfg.visible_queue)


def test_flat_encoder_refuses_another_cluster_size() -> None:
    flat = FlatEncoder({"servers": (4, 14), "tasks": (10, 15), "globals": (5,)}, hidden=32)
    assert flat(random_obs(2, 4, 10)).pooled.shape == (2, 32)
    with pytest.raises(ValueError, match="FlatEncoder built for servers"):
        flat(random_obs(2, 8, 10))


def _flat_encoder() -> FlatEncoder:
    return FlatEncoder({"servers": [4, 14], "tasks": [10, 15], "globals": [5]})


@pytest.mark.parametrize("make", [attention_encoder, _flat_encoder])
def test_config_rebuilds_the_same_architecture(make: Callable[[], nn.Module]) -> None:
    encoder = make()
    config = json.loads(json.dumps(encoder.config()))
    rebuilt = type(encoder)(**config)
    assert rebuilt.config() == encoder.config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in encoder.state_dict().items()
    }


def test_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match="divisible"):
        AttentionEncoder(14, 15, 5, d_model=30, heads=4)
