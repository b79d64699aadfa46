"""Synthetic observations and small networks for the network tests."""

from __future__ import annotations

import torch
from torch import Tensor

from policy_models.nets import AttentionEncoder, DiffusionActor, TwinCritic
from policy_models.nets.encoders import TensorObservation
from policy_models.obs import GLOBAL_FEATURES, SERVER_FEATURES, T_IDX, TASK_FEATURES

D_MODEL = 32  # small networks keep the suite fast; the architecture does not depend on the width


def random_obs(
    batch: int, n_servers: int, queue: int, seed: int = 0, n_valid: int | None = None
) -> TensorObservation:
    """Observation tensors shaped like `policy_models.obs.encode` output: features in [0, 1], the first
    `n_valid` task slots valid (default: a random number per row, at least one), padding slots all zero
    as the encoder of observations leaves them."""
    gen = torch.Generator().manual_seed(seed)
    servers = torch.rand(batch, n_servers, len(SERVER_FEATURES), generator=gen)
    tasks = torch.rand(batch, queue, len(TASK_FEATURES), generator=gen)
    if n_valid is None:
        counts = torch.randint(1, queue + 1, (batch, 1), generator=gen)
    else:
        counts = torch.full((batch, 1), n_valid)
    valid = torch.arange(queue).unsqueeze(0) < counts
    tasks[..., T_IDX["valid"]] = 1.0
    tasks[..., T_IDX["feasible"]] = (torch.rand(batch, queue, generator=gen) < 0.6).float()
    tasks = tasks * valid.unsqueeze(-1)
    glob = torch.rand(batch, len(GLOBAL_FEATURES), generator=gen)
    return {"servers": servers, "tasks": tasks, "globals": glob}


def permute_tasks(obs: TensorObservation, order: Tensor) -> TensorObservation:
    return {**obs, "tasks": obs["tasks"][:, order]}


def attention_encoder(seed: int = 0) -> AttentionEncoder:
    torch.manual_seed(seed)
    return AttentionEncoder(len(SERVER_FEATURES), len(TASK_FEATURES), len(GLOBAL_FEATURES), d_model=D_MODEL)


def per_task_actor(seed: int = 0) -> DiffusionActor:
    torch.manual_seed(seed)
    return DiffusionActor(state_dim=D_MODEL, token_dim=D_MODEL, hidden=64, score_hidden=32)


def per_task_critic(seed: int = 0) -> TwinCritic:
    torch.manual_seed(seed)
    return TwinCritic(state_dim=D_MODEL, token_dim=D_MODEL, hidden=64)
