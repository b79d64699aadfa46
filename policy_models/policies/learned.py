"""A trained agent as a `Policy`: the encoder and actor, acting with the deterministic mean action.

Evaluation is deterministic (docs/simulator.md, issue 14): the actor's mean path, no sampling, so a
decision depends only on its own observation. `make_policy("checkpoint:<dir>", cfg)` builds one from a
checkpoint directory (or a training run's directory: its best/ checkpoint).

lad-ts: the reverse chain starts from the `ActionPrior` of the observation's state bucket instead of
0. The prior is frozen here (`act` only reads it), so evaluation stays deterministic and a decision
still depends only on its own observation; training updates it, and a live policy server may choose
to update it online later (that would make decisions depend on the history served).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policy_models.checkpoints import CheckpointError, load_checkpoint, restore_modules
from policy_models.config import SimConfig
from policy_models.learning.agents import module_from_description, resolve_checkpoint
from policy_models.learning.prior import ActionPrior
from policy_models.nets import FlatEncoder, as_tensors
from policy_models.obs import OBS_SPEC_VERSION, Observation, ObservationSpec
from policy_models.policies.base import Policy

POLICY_MODULES = ("encoder", "actor")
PRIOR_MODULE = "prior"  # present in lad-ts checkpoints only


class LearnedPolicy(Policy):
    name = "learned"

    def __init__(
        self, config: SimConfig, encoder: nn.Module, actor: nn.Module, prior: ActionPrior | None = None
    ) -> None:
        super().__init__(config)
        self.encoder = encoder
        self.actor = actor
        self.prior = prior  # lad-ts: read, never updated (module docs)

    def act(self, obs: Observation) -> np.ndarray:
        # A trainer may share these modules and switch them back to train mode (module.train() sets
        # the flag on the top module too); eval() walks every submodule, so only when needed.
        if self.encoder.training or self.actor.training:
            self.encoder.eval()
            self.actor.eval()
        start = None if self.prior is None else torch.from_numpy(self.prior.prior(obs))
        with torch.inference_mode():
            _, _, mean_action = self.actor(self.encoder(as_tensors(obs)), deterministic=True, prior=start)
        return mean_action.clamp(-1.0, 1.0).numpy().astype(np.float32, copy=False)

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike[str], config: SimConfig) -> LearnedPolicy:
        """Rebuild the encoder and actor from a checkpoint's JSON and load their weights. Refuses a
        checkpoint made for another observation spec version or action size, or (flat encoders) for
        other observation shapes."""
        path = resolve_checkpoint(directory, prefer_best=True)
        states, saved = load_checkpoint(path)
        check_compatible(saved, config, path)
        names = [*POLICY_MODULES, *([PRIOR_MODULE] if PRIOR_MODULE in saved["modules"] else [])]
        modules = {name: module_from_description(saved["modules"][name]) for name in names}
        restore_modules(modules, states)
        if isinstance(modules["encoder"], FlatEncoder):
            check_flat_shapes(modules["encoder"], config, path)
        prior = modules.get(PRIOR_MODULE)
        if prior is not None and not isinstance(prior, ActionPrior):
            raise CheckpointError(f"{path}: module {PRIOR_MODULE!r} is a {type(prior).__name__}")
        policy = cls(config, modules["encoder"], modules["actor"], prior)
        policy.name = f"checkpoint:{path}"
        return policy


def check_compatible(saved: dict[str, Any], config: SimConfig, path: Path) -> None:
    """Raise CheckpointError unless the checkpoint's observation spec version and action size match."""
    spec = ObservationSpec.from_config(config)
    missing = [key for key in ("obs_spec_version", "action_dim", "modules") if key not in saved]
    if missing or not set(POLICY_MODULES) <= saved["modules"].keys():
        raise CheckpointError(
            f"{path}: not a learned-policy checkpoint (missing {missing or POLICY_MODULES})"
        )
    if saved["obs_spec_version"] != spec.version or spec.version != OBS_SPEC_VERSION:
        raise CheckpointError(
            f"{path}: trained on observation spec v{saved['obs_spec_version']}, this config uses "
            f"v{spec.version}; retrain or use a matching code version"
        )
    if saved["action_dim"] != config.action_dim:
        raise CheckpointError(
            f"{path}: trained for action_dim {saved['action_dim']} (visible queue "
            f"{saved['action_dim'] - 2}), this config has action_dim {config.action_dim} "
            f"(visible_queue {config.visible_queue})"
        )


def check_flat_shapes(encoder: FlatEncoder, config: SimConfig, path: Path) -> None:
    shapes = {key: tuple(shape) for key, shape in ObservationSpec.from_config(config).shapes.items()}
    if encoder.obs_shapes != shapes:
        raise CheckpointError(
            f"{path}: flat encoder built for observation shapes {encoder.obs_shapes}, this config "
            f"(N={config.n_servers}) gives {shapes}; flat agents serve one cluster size"
        )
