"""Latency of one scheduling decision, for benchmarks and the design notes (no script, one function)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from policy_models.nets.encoders import as_tensors
from policy_models.obs import Observation


def decision_latency_ms(actor: nn.Module, encoder: nn.Module, obs: Observation, repeats: int = 200) -> float:
    """Median milliseconds of one deterministic decision: numpy observation -> tensors -> encoder ->
    actor -> numpy action, under torch.inference_mode with the modules in eval mode.

    Uses the caller's thread settings (call torch.set_num_threads(1) to measure one core). A few
    untimed warm-up decisions come first; the modules' train/eval state is restored afterwards."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    was_training = {module: module.training for module in (actor, encoder)}
    actor.eval()
    encoder.eval()
    try:
        with torch.inference_mode():
            for _ in range(max(5, repeats // 10)):
                _decide(actor, encoder, obs)
            timings = []
            for _ in range(repeats):
                start = time.perf_counter_ns()
                _decide(actor, encoder, obs)
                timings.append(time.perf_counter_ns() - start)
    finally:
        for module, training in was_training.items():
            module.train(training)
    return statistics.median(timings) / 1e6


def _decide(actor: nn.Module, encoder: nn.Module, obs: Observation) -> None:
    action, _, _ = actor(encoder(as_tensors(obs)), deterministic=True)
    action.numpy()
