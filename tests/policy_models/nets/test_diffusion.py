"""Noise schedule, noise networks and the diffusion / Gaussian actors."""

from __future__ import annotations

import json

import pytest
import torch
from torch.distributions import Normal

from policy_models.nets import (
    Denoiser,
    DiffusionActor,
    FlatEncoder,
    GaussianActor,
    ScoreDenoiser,
    SinusoidalTimeEmbedding,
    VPSchedule,
)
from policy_models.nets.diffusion import DECISION_DIM
from tests.policy_models.nets.helpers import (
    D_MODEL,
    attention_encoder,
    per_task_actor,
    permute_tasks,
    random_obs,
)


# ----- schedule and embeddings -------------------------------------------------------------------------
def test_vp_schedule_is_a_proper_variance_preserving_schedule() -> None:
    schedule = VPSchedule(steps=10)
    cumprod = schedule.alphas_cumprod
    assert cumprod.shape == (10,)
    assert ((cumprod > 0) & (cumprod < 1)).all()
    assert (cumprod[1:] < cumprod[:-1]).all()  # strictly decreasing
    assert ((schedule.betas > 0) & (schedule.betas < 1)).all()
    assert cumprod[-1] < 0.01  # x_T is close to pure noise
    torch.testing.assert_close(torch.cumprod(schedule.alphas, 0), cumprod)
    # at the last reverse step the posterior mean is the x0 estimate itself
    assert schedule.posterior_mean_coef1[0].item() == pytest.approx(1.0)
    assert schedule.posterior_mean_coef2[0].item() == pytest.approx(0.0, abs=1e-7)
    assert (schedule.posterior_variance >= 0).all()
    assert schedule.state_dict() == {}  # derived from the config, not saved


def test_posterior_step_recovers_x0_from_the_true_noise() -> None:
    schedule = VPSchedule(steps=10)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 6, generator=gen) * 2 - 1
    noise = torch.randn(4, 6, generator=gen)
    for t in (9, 4, 1):
        x_t = schedule.add_noise(x0, torch.full((4,), t), noise)
        expected = schedule.posterior_mean_coef1[t] * x0 + schedule.posterior_mean_coef2[t] * x_t
        torch.testing.assert_close(
            schedule.posterior_step(x_t, noise, t, None), expected, atol=1e-5, rtol=1e-5
        )
    x_0 = schedule.add_noise(x0, torch.zeros(4, dtype=torch.long), noise)
    torch.testing.assert_close(
        schedule.posterior_step(x_0, noise, 0, torch.ones(4, 6)), x0, atol=1e-5, rtol=1e-5
    )


def test_sinusoidal_embedding() -> None:
    emb = SinusoidalTimeEmbedding(16)(torch.arange(10.0))
    assert emb.shape == (10, 16)
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    assert (emb.abs() <= 1).all()


def test_folded_noise_networks_match_their_reference_form() -> None:
    torch.manual_seed(0)
    b, q, t_dim = 3, 5, 16
    state, tokens = torch.randn(b, 24), torch.randn(b, q, 20)
    t_emb = torch.randn(10, t_dim)
    denoiser = Denoiser(action_dim=2, state_dim=24, hidden=32, time_dim=t_dim)
    scorer = ScoreDenoiser(token_dim=20, state_dim=24, hidden=16, time_dim=t_dim)
    x = torch.randn(b, 2 + q)
    fast_decision, fast_scores = denoiser.conditioned(state, t_emb), scorer.conditioned(tokens, state, t_emb)
    for t in (0, 6, 9):
        step_emb = t_emb[t].expand(b, -1)
        torch.testing.assert_close(fast_decision(x[:, :2], t), denoiser(x[:, :2], step_emb, state))
        torch.testing.assert_close(fast_scores(x[:, 2:], t), scorer(x[:, 2:], step_emb, tokens, state))


# ----- the diffusion actor -----------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "q"), [(4, 10), (12, 3), (8, 1)])
def test_per_task_actor_shapes_for_any_cluster_size(n: int, q: int) -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    state = encoder(random_obs(3, n, q))
    for deterministic in (True, False):
        action, log_prob, mu = actor(state, deterministic=deterministic)
        assert action.shape == mu.shape == (3, 2 + q)
        assert log_prob.shape == (3,)
        assert (mu.abs() <= 1).all()  # the chain ends on a clamped x0 estimate


def test_flat_actor_outputs_every_component_from_the_denoiser() -> None:
    encoder = FlatEncoder({"servers": (4, 14), "tasks": (10, 15), "globals": (5,)}, hidden=32)
    actor = DiffusionActor(state_dim=32, action_dim=12, hidden=64)
    assert actor.denoiser.output.out_features == 12 and actor.score_denoiser is None
    action, log_prob, mu = actor(encoder(random_obs(2, 4, 10)), deterministic=False)
    assert action.shape == mu.shape == (2, 12) and log_prob.shape == (2,)
    bare, _, _ = actor(torch.randn(2, 32), deterministic=True)  # a bare state feature works too
    assert bare.shape == (2, 12)


def test_deterministic_is_deterministic_and_stochastic_is_reproducible() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    state = encoder(random_obs(4, 4, 10))
    first, _, mu = actor(state, deterministic=True)
    second, _, _ = actor(state, deterministic=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second) and torch.equal(first, mu)
    # one row alone decides as it does inside a batch (no batch-dependent noise)
    alone, _, _ = actor(
        type(state)(*(None if part is None else part[:1] for part in state)), deterministic=True
    )
    torch.testing.assert_close(alone, first[:1])

    def sample(seed: int) -> torch.Tensor:
        return actor(state, deterministic=False, generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(sample(7), sample(7))
    assert not torch.equal(sample(7), sample(8))
    assert not torch.equal(sample(7), first)


def test_log_prob_matches_torch_normal_over_counted_dimensions() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    state = encoder(random_obs(5, 4, 10))
    assert not state.task_valid.all()  # some padding slots
    action, log_prob, mu = actor(state, deterministic=False, generator=torch.Generator().manual_seed(0))
    std = actor.log_std_head(mu).exp()
    per_dim = Normal(mu, std).log_prob(action)
    counted = torch.cat([torch.ones(5, DECISION_DIM, dtype=torch.bool), state.task_valid], dim=1)
    torch.testing.assert_close(log_prob, (per_dim * counted).sum(-1), atol=1e-4, rtol=1e-5)
    _, det_log_prob, det_mu = actor(state, deterministic=True)
    expected = (Normal(det_mu, actor.log_std_head(det_mu).exp()).log_prob(det_mu) * counted).sum(-1)
    torch.testing.assert_close(det_log_prob, expected, atol=1e-4, rtol=1e-5)


def test_no_squash_after_the_bounded_mean() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    with torch.no_grad():  # widest allowed std: samples must leave [-1, 1] (the simulator clips)
        for layer in (actor.log_std_head.decision, actor.log_std_head.score):
            layer.weight.zero_()
            layer.bias.fill_(1.0)
    state = encoder(random_obs(8, 4, 10))
    action, _, mu = actor(state, deterministic=False, generator=torch.Generator().manual_seed(0))
    assert (action.abs() > 1).any()
    assert (mu.abs() <= 1).all()


def test_scores_follow_the_task_order() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    obs = random_obs(2, 4, 10, n_valid=8)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    base_state, permuted_state = encoder(obs), encoder(permute_tasks(obs, order))
    base, _, _ = actor(base_state, deterministic=True)
    permuted, _, _ = actor(permuted_state, deterministic=True)
    torch.testing.assert_close(permuted[:, :2], base[:, :2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted[:, 2:], base[:, 2:][:, order], atol=1e-5, rtol=1e-5)
    prior = torch.rand(2, 12) * 2 - 1
    permuted_prior = torch.cat([prior[:, :2], prior[:, 2:][:, order]], dim=1)
    base, _, _ = actor(base_state, deterministic=True, prior=prior)
    permuted, _, _ = actor(permuted_state, deterministic=True, prior=permuted_prior)
    torch.testing.assert_close(permuted[:, 2:], base[:, 2:][:, order], atol=1e-5, rtol=1e-5)


def test_the_chain_starts_from_a_given_prior() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    state = encoder(random_obs(2, 4, 10))
    from_zero, _, _ = actor(state, deterministic=True)
    from_prior, _, _ = actor(state, deterministic=True, prior=torch.ones(2, 12))
    assert not torch.equal(from_zero, from_prior)
    with pytest.raises(ValueError, match="prior must have shape"):
        actor(state, deterministic=True, prior=torch.ones(2, 11))


def test_gradients_reach_encoder_denoisers_and_log_std_head() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    action, log_prob, _ = actor(encoder(random_obs(6, 4, 10)), generator=torch.Generator().manual_seed(0))
    (action.square().sum() + log_prob.sum()).backward()
    modules = {
        "encoder": encoder,
        "time_embedding": actor.time_embedding,
        "denoiser": actor.denoiser,
        "score_denoiser": actor.score_denoiser,
        "log_std_head": actor.log_std_head,
    }
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_layout_is_chosen_by_exactly_one_argument() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DiffusionActor(state_dim=8)
    with pytest.raises(ValueError, match="exactly one"):
        DiffusionActor(state_dim=8, action_dim=12, token_dim=8)
    flat = DiffusionActor(state_dim=8, action_dim=12, hidden=16)
    with pytest.raises(ValueError, match="do not match"):  # a 10-slot flat actor on a 3-slot state
        flat(attention_encoder()(random_obs(1, 4, 3))._replace(pooled=torch.randn(1, 8)))


@pytest.mark.parametrize("cls", [DiffusionActor, GaussianActor])
def test_actor_config_is_json_and_rebuilds(cls: type) -> None:
    actor = cls(state_dim=D_MODEL, token_dim=D_MODEL, hidden=64)
    config = json.loads(json.dumps(actor.config()))
    assert cls(**config).config() == actor.config()


# ----- the Gaussian actor (EAT-D / EAT-DA) ------------------------------------------------------------
@pytest.mark.parametrize(("n", "q"), [(4, 10), (12, 3)])
def test_gaussian_actor_shares_the_interface(n: int, q: int) -> None:
    encoder = attention_encoder()
    torch.manual_seed(0)
    actor = GaussianActor(state_dim=D_MODEL, token_dim=D_MODEL, hidden=64, score_hidden=32)
    state = encoder(random_obs(3, n, q))
    action, log_prob, mu = actor(state, deterministic=True)
    assert action.shape == (3, 2 + q) and log_prob.shape == (3,) and torch.equal(action, mu)
    assert (mu.abs() <= 1).all()
    gen = torch.Generator().manual_seed(1)
    sample, log_prob, mu = actor(state, deterministic=False, generator=gen)
    counted = torch.cat([torch.ones(3, 2, dtype=torch.bool), state.task_valid], dim=1)
    expected = (Normal(mu, actor.log_std_head(mu).exp()).log_prob(sample) * counted).sum(-1)
    torch.testing.assert_close(log_prob, expected, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="no reverse chain"):
        actor(state, deterministic=True, prior=torch.zeros(3, 2 + q))


def test_flat_gaussian_actor() -> None:
    actor = GaussianActor(state_dim=16, action_dim=12, hidden=32)
    action, log_prob, _ = actor(torch.randn(4, 16), deterministic=False)
    assert action.shape == (4, 12) and log_prob.shape == (4,)
