"""Twin critics for both layouts and the soft target update."""

from __future__ import annotations

import copy

import pytest
import torch

from policy_models.nets import TwinCritic, soft_update
from policy_models.nets.encoders import EncodedState
from tests.policy_models.nets.helpers import attention_encoder, per_task_critic, permute_tasks, random_obs


def _action(batch: int, q: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 2 + q, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(("n", "q"), [(4, 10), (12, 3), (8, 1)])
def test_per_task_critic_handles_any_queue_length(n: int, q: int) -> None:
    state = attention_encoder()(random_obs(3, n, q))
    q1, q2 = per_task_critic()(state, _action(3, q))
    assert q1.shape == q2.shape == (3,)
    assert not torch.equal(q1, q2)  # two independent networks


def test_flat_critic() -> None:
    critic = TwinCritic(state_dim=16, action_dim=12, hidden=32)
    valid = torch.ones(5, 10, dtype=torch.bool)
    state = EncodedState(torch.randn(5, 16), None, valid, valid)
    q1, q2 = critic(state, _action(5, 10))
    assert q1.shape == q2.shape == (5,)


def test_q_is_invariant_to_task_order() -> None:
    encoder, critic = attention_encoder(), per_task_critic()
    obs, action = random_obs(2, 4, 10, n_valid=9), _action(2, 10)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    permuted_action = torch.cat([action[:, :2], action[:, 2:][:, order]], dim=1)
    base = critic(encoder(obs), action)
    permuted = critic(encoder(permute_tasks(obs, order)), permuted_action)
    for a, b in zip(base, permuted, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_q_sees_actions_as_the_simulator_does() -> None:
    state = attention_encoder()(random_obs(4, 4, 10))
    critic = per_task_critic()
    action = _action(4, 10) * 3  # well outside [-1, 1]
    for a, b in zip(critic(state, action), critic(state, action.clamp(-1, 1)), strict=True):
        torch.testing.assert_close(a, b)
    # scores of slots that cannot launch have no effect
    changed = action.clone()
    changed[:, 2:] = torch.where(state.task_feasible, changed[:, 2:], -changed[:, 2:])
    for a, b in zip(critic(state, action), critic(state, changed), strict=True):
        torch.testing.assert_close(a, b)


def test_no_launchable_task_gives_finite_q_and_gradients() -> None:
    state = attention_encoder()(random_obs(2, 4, 5))
    state = state._replace(task_feasible=torch.zeros_like(state.task_feasible))
    action = _action(2, 5).requires_grad_(True)
    q1, q2 = per_task_critic()(state, action)
    (q1 + q2).sum().backward()
    assert torch.isfinite(q1).all() and action.grad is not None and torch.isfinite(action.grad).all()


def test_actions_get_gradients_through_the_chosen_task() -> None:
    state = attention_encoder()(random_obs(2, 4, 10, n_valid=10))
    state = state._replace(task_feasible=torch.ones_like(state.task_feasible))
    action = (_action(2, 10) * 0.5).requires_grad_(True)
    q1, _ = per_task_critic()(state, action)
    q1.sum().backward()
    assert action.grad is not None and (action.grad[:, :2] != 0).all() and (action.grad[:, 2:] != 0).any()


def test_soft_update_math() -> None:
    torch.manual_seed(0)
    source, target = TwinCritic(8, action_dim=4, hidden=16), TwinCritic(8, action_dim=4, hidden=16)
    before = copy.deepcopy(target)
    soft_update(target, source, tau=0.25)
    for new, old, src in zip(target.parameters(), before.parameters(), source.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * src)
        assert not new.requires_grad or new.grad is None
    soft_update(target, source, tau=1.0)
    for new, src in zip(target.parameters(), source.parameters(), strict=True):
        assert torch.equal(new, src)
    with pytest.raises(ValueError, match="tau"):
        soft_update(target, source, tau=1.5)
