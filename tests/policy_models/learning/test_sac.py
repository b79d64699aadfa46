"""One SAC update: what it changes, what it leaves, and the target network's exact soft update."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from policy_models.config import paper_config
from policy_models.learning.agents import ALGORITHMS, Agent, AgentConfig, build_agent
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.sac import TensorBatch, build_optimizers, sac_update, td_error
from policy_models.obs import ObservationSpec
from policy_models.sim.batched import BatchedClusterSim

torch.set_num_threads(1)

CFG = paper_config(4, 0.05)
SMALL = AgentConfig(
    hidden=32, score_hidden=16, d_model=16, attention_ff=32, diffusion_steps=3, batch_size=64, tau=0.1
)


def fixed_batch(size: int = 64, seed: int = 0, with_priors: bool = False) -> TensorBatch:
    """Transitions of random actions on the simulator, sampled once; with random chain starts
    (prior, prior') too when `with_priors` (lad-ts)."""
    sim = BatchedClusterSim(CFG, list(range(8)))
    buffer = ReplayBuffer(sim.spec.shapes, CFG.action_dim, capacity=1024, seed=seed, with_priors=with_priors)
    rng = np.random.default_rng(seed)
    obs = sim.reset()
    for _ in range(16):
        action = rng.uniform(-1, 1, (8, CFG.action_dim)).astype(np.float32)
        result = sim.step(action)
        priors = rng.uniform(-1, 1, (2, 8, CFG.action_dim)).astype(np.float32) if with_priors else [None] * 2
        buffer.add(obs, action, result.reward, result.obs, (result.terminated | result.truncated), *priors)
        obs = result.obs
    return TensorBatch.from_numpy(buffer.sample(size))


def small_agent(algorithm: str = "eat", **changes: object) -> Agent:
    config = dataclasses.replace(SMALL, algorithm=algorithm, **changes)
    return build_agent(config, ObservationSpec.from_config(CFG), seed=0)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], p) for name, p in module.named_parameters())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_update_moves_actor_critic_encoder_and_targets_by_exactly_tau(algorithm: str) -> None:
    agent = small_agent(algorithm)
    optimizers = build_optimizers(agent)
    actor, critic, encoder = snapshot(agent.actor), snapshot(agent.critic), snapshot(agent.encoder)
    target = snapshot(agent.target_critic)

    batch = fixed_batch(with_priors=agent.config.uses_prior)
    stats = sac_update(agent, optimizers, batch, torch.Generator().manual_seed(0))

    assert changed(actor, agent.actor) and changed(critic, agent.critic) and changed(encoder, agent.encoder)
    tau = agent.config.tau
    for name, moved in agent.target_critic.named_parameters():
        expected = (1 - tau) * target[name] + tau * dict(agent.critic.named_parameters())[name]
        torch.testing.assert_close(moved, expected, rtol=0, atol=1e-6)
    assert changed(target, agent.target_critic)
    values = dataclasses.asdict(stats)
    assert math.isnan(values.pop("imitation_loss")) and math.isnan(values.pop("imitation_kept"))  # no teacher
    assert all(math.isfinite(v) for v in values.values())
    assert stats.entropy_estimate == -stats.log_prob_mean
    assert stats.critic_grad_norm > 0 and stats.actor_grad_norm > 0


def test_the_actor_loss_does_not_train_the_encoder_or_critic() -> None:
    """With the critic's learning rate at 0, only the actor may move: the actor loss reaches neither
    the shared encoder (detached features) nor the critic (frozen while the actor backpropagates)."""
    agent = small_agent(critic_lr=0.0, weight_decay=0.0)
    optimizers = build_optimizers(agent)
    critic, encoder, actor = snapshot(agent.critic), snapshot(agent.encoder), snapshot(agent.actor)
    sac_update(agent, optimizers, fixed_batch(), torch.Generator().manual_seed(0))
    assert not changed(critic, agent.critic) and not changed(encoder, agent.encoder)
    assert changed(actor, agent.actor)
    assert all(p.requires_grad for p in agent.critic.parameters())  # unfrozen after the actor step


@pytest.mark.slow
def test_updates_on_a_fixed_batch_shrink_its_td_error() -> None:
    agent = small_agent()
    optimizers = build_optimizers(agent)
    batch = fixed_batch()
    before = td_error(agent, batch, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        sac_update(agent, optimizers, batch, generator)
    after = td_error(agent, batch, torch.Generator().manual_seed(1))
    # The target moves too (tau 0.1 here), so the error does not fall monotonically; 50 updates at the
    # critic's learning rate halve it on this batch.
    assert after < 0.75 * before


def test_gradient_clipping_reports_the_norm_before_clipping() -> None:
    clipped = small_agent(max_grad_norm=1e-3)
    free = small_agent()
    batch = fixed_batch()
    stats_clipped = sac_update(clipped, build_optimizers(clipped), batch, torch.Generator().manual_seed(0))
    stats_free = sac_update(free, build_optimizers(free), batch, torch.Generator().manual_seed(0))
    assert stats_clipped.critic_grad_norm == pytest.approx(stats_free.critic_grad_norm, rel=1e-5)
    assert stats_clipped.critic_grad_norm > 1e-3
