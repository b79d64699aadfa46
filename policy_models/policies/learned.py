"""A trained agent as a `Policy`: the encoder and actor, acting with the deterministic mean action.

Evaluation is deterministic (docs/simulator.md, issue 14): the actor's mean path, no sampling, so a
decision depends only on its own observation. `make_policy("checkpoint:<dir>", cfg)` builds one from a
checkpoint directory (or a training run's directory: its best/ checkpoint), deciding through a frozen
TorchScript graph per input shape (`trace_decision`); policies over modules that are still training
(the trainers' evaluations) run the modules eagerly.

lad-ts: the reverse chain starts from the `ActionPrior` of the observation's state bucket instead of
0. The prior is frozen here (`act` only reads it), so evaluation stays deterministic and a decision
still depends only on its own observation; training updates it, and a live policy server may choose
to update it online later (that would make decisions depend on the history served).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policy_models.checkpoints import CheckpointError, load_checkpoint, restore_modules
from policy_models.config import SimConfig
from policy_models.learning.agents import module_from_description, resolve_checkpoint
from policy_models.learning.hints import (
    make_hinter,
    observation_shapes,
    residual_to_action,
    to_env_action,
    with_hint,
)
from policy_models.learning.prior import ActionPrior
from policy_models.nets import FlatEncoder, as_tensors
from policy_models.nets.encoders import HINT_KEY, OBS_KEYS, observation_keys
from policy_models.obs import OBS_SPEC_VERSION, Observation, ObservationSpec
from policy_models.policies.base import Policy
from policy_models.sim.batched import BatchedClusterSim

POLICY_MODULES = ("encoder", "actor")
PRIOR_MODULE = "prior"  # present in lad-ts checkpoints only


class LearnedPolicy(Policy):
    name = "learned"

    def __init__(
        self,
        config: SimConfig,
        encoder: nn.Module,
        actor: nn.Module,
        prior: ActionPrior | None = None,
        *,
        compiled: bool = False,
        hinter: Policy | None = None,
        residual: bool = False,
        residual_deadzone: float = 0.0,
    ) -> None:
        super().__init__(config)
        self.encoder = encoder
        self.actor = actor
        self.prior = prior  # lad-ts: read, never updated (module docs)
        self.hinter = hinter  # hinted agents: the heuristic whose action joins the observation
        if residual and hinter is None:
            raise ValueError("a residual policy corrects a hint: give its hinter")
        self.residual = residual  # the actor's output corrects the hint (`learning.hints`)
        self.deadzone = residual_deadzone
        # Traced decisions (`trace_decision`) copy the weights in, so only for modules nothing trains
        # any more: `from_checkpoint` turns this on. lad-ts's chain starts from a per-state prior
        # computed in numpy, outside the graph: it stays eager.
        self.compiled = compiled and prior is None
        self._traced: dict[tuple[tuple[int, ...], ...], torch.jit.ScriptModule] = {}

    def prepare(self) -> None:
        """Trace the batch-1 decision for this config now (a policy server's shape), so the first
        decision served does not pay for it."""
        if self.compiled:
            self.act(BatchedClusterSim(self.cfg, [0]).reset())

    @property
    def task_features(self) -> int:
        """Task-token width the encoder was built for: a policy made without SLO features reads only
        the first TASK_FEATURES columns of observations that carry them (obs.SLO_TASK_FEATURES)."""
        encoder = self.encoder
        if isinstance(encoder, FlatEncoder):
            return encoder.obs_shapes["tasks"][-1]
        return int(encoder.config()["task_features"])

    def act(self, obs: Observation) -> np.ndarray:
        obs = with_hint(obs, self.hinter)
        if obs["tasks"].shape[-1] > self.task_features:
            obs = {**obs, "tasks": np.ascontiguousarray(obs["tasks"][..., : self.task_features])}
        if self.compiled:
            tensors = as_tensors(obs)
            inputs = tuple(tensors[key] for key in observation_keys(tensors))
            with torch.inference_mode():
                action = self._traced_for(inputs)(*inputs)
            return action.numpy().astype(np.float32, copy=False)  # residuals applied in the graph
        # A trainer may share these modules and switch them back to train mode (module.train() sets
        # the flag on the top module too); eval() walks every submodule, so only when needed.
        if self.encoder.training or self.actor.training:
            self.encoder.eval()
            self.actor.eval()
        start = None if self.prior is None else torch.from_numpy(self.prior.prior(obs))
        with torch.inference_mode():
            _, _, mean_action = self.actor(self.encoder(as_tensors(obs)), deterministic=True, prior=start)
        output = mean_action.clamp(-1.0, 1.0).numpy().astype(np.float32, copy=False)
        return to_env_action(output, obs, self.residual, self.deadzone)

    def _traced_for(self, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
        """The traced decision for these input shapes (batch size, servers, visible queue)."""
        key = tuple(tuple(tensor.shape) for tensor in inputs)
        traced = self._traced.get(key)
        if traced is None:
            traced = self._traced[key] = trace_decision(
                self.encoder, self.actor, inputs, self.residual, self.deadzone
            )
        return traced

    @classmethod
    def from_checkpoint(
        cls, directory: str | os.PathLike[str], config: SimConfig, compiled: bool = True
    ) -> LearnedPolicy:
        """Rebuild the encoder and actor from a checkpoint's JSON and load their weights. Refuses a
        checkpoint made for another observation spec version or action size, or (flat encoders) for
        other observation shapes. `compiled`: decide through traced graphs (`trace_decision`)."""
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
        agent = saved.get("agent", {})  # PPO checkpoints: never hinted
        hinter = make_hinter(agent["hint"], config) if agent.get("hint") else None
        residual = bool(agent.get("residual", False))
        deadzone = float(agent.get("residual_deadzone", 0.0))
        policy = cls(
            config,
            modules["encoder"],
            modules["actor"],
            prior,
            compiled=compiled,
            hinter=hinter,
            residual=residual,
            residual_deadzone=deadzone,
        )
        policy.name = f"checkpoint:{path}"
        return policy


class DeterministicDecision(nn.Module):
    """Observation tensors (in OBS_KEYS order, then the hint if any) -> the actor's deterministic mean
    action, clamped."""

    def __init__(
        self, encoder: nn.Module, actor: nn.Module, residual: bool = False, deadzone: float = 0.0
    ) -> None:
        super().__init__()
        self.encoder, self.actor, self.residual, self.deadzone = encoder, actor, residual, deadzone

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        keys = (*OBS_KEYS, HINT_KEY)[: len(tensors)]
        obs = dict(zip(keys, tensors, strict=True))
        _, _, mean_action = self.actor(self.encoder(obs), deterministic=True)
        output = mean_action.clamp(-1.0, 1.0)
        return residual_to_action(output, obs[HINT_KEY], self.deadzone) if self.residual else output


def trace_decision(
    encoder: nn.Module,
    actor: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    residual: bool = False,
    deadzone: float = 0.0,
) -> torch.jit.ScriptModule:
    """The deterministic decision recorded as a TorchScript graph for these input shapes, frozen (the
    weights become constants) and optimised for inference. The same operations on the same weights
    (actions agree to ~1e-6), without Python's per-module and per-call overhead, which is most of a
    batch-1 decision on a CPU (about 2.5x faster for EAT). The graph holds no data-dependent branch:
    the reverse chain's length and coefficients are fixed by the schedule, masks are tensor ops.

    torch.jit is deprecated in favour of torch.compile, but still works in the pinned torch; compile's
    CPU backend needs a C++ toolchain and tens of seconds per graph, too slow to build per cluster
    shape in a policy server or an evaluation (hence the FutureWarnings silenced here)."""
    module = DeterministicDecision(encoder, actor, residual, deadzone).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, inputs, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


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
    spec = ObservationSpec.from_config(config)
    shapes = {
        key: tuple(shape) for key, shape in observation_shapes(spec, HINT_KEY in encoder.obs_shapes).items()
    }
    if encoder.obs_shapes != shapes:
        raise CheckpointError(
            f"{path}: flat encoder built for observation shapes {encoder.obs_shapes}, this config "
            f"(N={config.n_servers}) gives {shapes}; flat agents serve one cluster size"
        )
