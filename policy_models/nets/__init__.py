"""Networks of the learned schedulers: state encoders, diffusion and Gaussian actors, twin critics.

Pure torch modules; each exposes `config()`, its constructor arguments, so checkpoints
(`policy_models.checkpoints`) describe themselves. The `Policy` wrappers come later.
"""

from policy_models.nets.bench import decision_latency_ms
from policy_models.nets.critics import TwinCritic, soft_update
from policy_models.nets.diffusion import (
    Denoiser,
    DiffusionActor,
    GaussianActor,
    ScoreDenoiser,
    SinusoidalTimeEmbedding,
    TimeEmbedding,
    VPSchedule,
)
from policy_models.nets.encoders import AttentionEncoder, EncodedState, FlatEncoder, as_tensors

__all__ = [
    "AttentionEncoder",
    "Denoiser",
    "DiffusionActor",
    "EncodedState",
    "FlatEncoder",
    "GaussianActor",
    "ScoreDenoiser",
    "SinusoidalTimeEmbedding",
    "TimeEmbedding",
    "TwinCritic",
    "VPSchedule",
    "as_tensors",
    "decision_latency_ms",
    "soft_update",
]
