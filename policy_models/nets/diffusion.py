"""EAT's diffusion actor (paper V-B2, after D2SAC) and the Gaussian actor of the no-diffusion ablations.

Actions are [execute, steps, score_1..score_Q] (`SimConfig.action_dim`). The noise schedule
(`VPSchedule`) is its own module, apart from the networks that predict noise (diffusers style).

Two layouts, fixed at construction:
- per-task (`token_dim` given; with `AttentionEncoder`, any Q): the `Denoiser` predicts the noise of
  the two decision components [execute, steps] from [x_t[:2], t_emb, pooled state]; a `ScoreDenoiser`,
  one set of weights shared by all slots, predicts the noise of each task's score from [that slot's
  noisy score, t_emb, the task's token, pooled state]. No parameter depends on Q,
  and permuting the task tokens (and the prior) permutes the scores.
- flat (`action_dim` given; with `FlatEncoder`, one fixed Q): the `Denoiser` predicts all 2+Q.

Reverse chain (D2SAC): x_T ~ N(0, I), or a given prior (LAD-TS starts from the previous episode's
action for the slot); at each step x0 = (x_t - sqrt(1-a_bar) eps) / sqrt(a_bar) clamped to [-1, 1],
then the posterior mean plus sigma*z except at the last step. The chain's output is the mean action mu;
at t = 0 the posterior mean is x0 itself, so mu lies in [-1, 1].

Gaussian head (paper eq. 13): log_std = clamp(Linear(mu), log_std_min, log_std_max) and the action is
mu + std * eps with NO tanh on top: mu is already bounded and the simulator clips; a tanh after a
bounded mean (the reference's double squash) made the top of the step range unreachable. In the
per-task layout a Linear(2, 2) on mu[:2] gives the decision log-stds and one shared Linear(1, 1) on
each slot's mean gives that slot's log-std, so the head too is Q-free.

log_prob sums over execute, steps and the scores of VALID task slots only: the simulator never reads a
padding slot's score, and counting those dimensions would add a state-dependent constant (the number
of empty slots) to the entropy term.

The noise prediction has no output tanh (D2SAC's MLP and the paper's Table VII end in one): its target
is N(0, I) noise, which a tanh cannot reach beyond +-1; mu is bounded by the x0 clamp instead.

Deterministic mode (evaluation) starts from the prior or from 0 and adds no noise anywhere: the mean
path of the chain. The action is then a fixed function of the state that does not depend on what else
is in the batch (the batched simulator and the live aggregator decide alike). Stochastic mode draws
every random number from the given `torch.Generator`, so it is reproducible.

Speed: the first layer of each noise network is split by input block; the state and time parts are
computed once per chain for all steps, leaving one small matmul on x_t per step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_models.nets.encoders import EncodedState

DECISION_DIM = 2  # [execute, steps]
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
NoisePredictor = Callable[[Tensor, int], Tensor]  # (x_t, step index) -> predicted noise


class VPSchedule(nn.Module):
    """Discrete variance-preserving schedule of Diffusion-QL / D2SAC.

    beta_t = 1 - exp(-beta_min/T - (beta_max - beta_min)(2t - 1) / (2 T^2)), t = 1..T. The coefficients
    are derived from the three constructor arguments, so they are non-persistent buffers (they follow
    the module across devices but are not saved); the sampling loop reads the same values from
    per-step `StepCoefficients`.
    """

    def __init__(self, steps: int = 10, beta_min: float = 0.1, beta_max: float = 10.0) -> None:
        super().__init__()
        if steps < 1 or not 0.0 < beta_min <= beta_max:
            raise ValueError(
                f"need steps >= 1 and 0 < beta_min <= beta_max, got {steps}, {beta_min}, {beta_max}"
            )
        self.steps, self.beta_min, self.beta_max = steps, beta_min, beta_max
        coefficients = vp_coefficients(steps, beta_min, beta_max)
        for name, values in coefficients.items():
            self.register_buffer(name, values.float(), persistent=False)
        self.register_buffer("timesteps", torch.arange(steps, dtype=torch.float32), persistent=False)
        self._step_coefficients = step_coefficients(coefficients)

    def config(self) -> dict[str, Any]:
        return dict(steps=self.steps, beta_min=self.beta_min, beta_max=self.beta_max)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process q(x_t | x0) for integer steps t (B,) in 0..T-1."""
        scale = self.sqrt_alphas_cumprod[t].unsqueeze(-1)
        spread = self.sqrt_one_minus_alphas_cumprod[t].unsqueeze(-1)
        return scale * x0 + spread * noise

    def posterior_step(self, x_t: Tensor, predicted_noise: Tensor, t: int, noise: Tensor | None) -> Tensor:
        """x_{t-1}: posterior mean given the clamped x0 estimate, plus sigma_t * noise unless t == 0."""
        step = self._step_coefficients[t]
        x0 = torch.add(
            x_t * step.sqrt_recip_alphas_cumprod, predicted_noise, alpha=-step.sqrt_recipm1_alphas_cumprod
        )
        mean = torch.add(
            x0.clamp_(-1.0, 1.0) * step.posterior_mean_coef1, x_t, alpha=step.posterior_mean_coef2
        )
        if noise is None or t == 0:
            return mean
        return mean.add_(noise, alpha=step.sigma)


class StepCoefficients(NamedTuple):
    """What one reverse step reads. Multipliers are 0-dim CPU tensors: multiplying by one is a single
    kernel that works for tensors on any device, where a Python float is first wrapped into a tensor
    (about twice the cost at batch 1). The others are Python floats, used as `alpha` arguments."""

    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: float
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: float
    sigma: float


def step_coefficients(coefficients: dict[str, Tensor]) -> list[StepCoefficients]:
    sigma = (0.5 * coefficients["posterior_log_variance_clipped"]).exp()
    return [
        StepCoefficients(
            coefficients["sqrt_recip_alphas_cumprod"][t].float(),
            coefficients["sqrt_recipm1_alphas_cumprod"][t].item(),
            coefficients["posterior_mean_coef1"][t].float(),
            coefficients["posterior_mean_coef2"][t].item(),
            sigma[t].item(),
        )
        for t in range(len(sigma))
    ]


def vp_coefficients(steps: int, beta_min: float, beta_max: float) -> dict[str, Tensor]:
    """All schedule quantities in float64, indexed by step 0..T-1 (step 0 is the last to run)."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alphas = torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
    betas = 1.0 - alphas
    alphas_cumprod = torch.cumprod(alphas, 0)
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
        sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
        sqrt_recip_alphas_cumprod=(1.0 / alphas_cumprod).sqrt(),
        sqrt_recipm1_alphas_cumprod=(1.0 / alphas_cumprod - 1.0).sqrt(),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_variance.clamp_min(1e-20).log(),
        posterior_mean_coef1=betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
    )


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sin/cos features of the (float) step index t: (T,) -> (T, dim)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"dim must be even and >= 4, got {dim}")
        self.dim = dim
        half = dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def config(self) -> dict[str, Any]:
        return dict(dim=self.dim)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.unsqueeze(-1) * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """D2SAC's time encoding: sinusoidal(dim) -> Linear 2*dim -> Mish -> Linear dim."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(
            SinusoidalTimeEmbedding(dim), nn.Linear(dim, 2 * dim), nn.Mish(), nn.Linear(2 * dim, dim)
        )

    def config(self) -> dict[str, Any]:
        return dict(dim=self.dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.net(t)


class Denoiser(nn.Module):
    """[x_t, t_emb, state] -> hidden -> hidden (Mish) -> predicted noise of x_t (paper Table VII)."""

    def __init__(self, action_dim: int, state_dim: int, hidden: int = 256, time_dim: int = 16) -> None:
        super().__init__()
        self.action_dim, self.state_dim, self.hidden_dim, self.time_dim = (
            action_dim,
            state_dim,
            hidden,
            time_dim,
        )
        self.input = nn.Linear(action_dim + time_dim + state_dim, hidden)
        self.hidden = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, action_dim)

    def config(self) -> dict[str, Any]:
        return dict(
            action_dim=self.action_dim,
            state_dim=self.state_dim,
            hidden=self.hidden_dim,
            time_dim=self.time_dim,
        )

    def forward(self, x_t: Tensor, t_emb: Tensor, state: Tensor) -> Tensor:
        """Reference form, one step: x_t (B, A), t_emb (B, time_dim), state (B, S) -> (B, A)."""
        pre_activation = self.input(torch.cat([x_t, t_emb, state], dim=-1))
        return mish_tail(pre_activation, tail_weights(self.hidden, self.output))

    def conditioned(self, state: Tensor, t_emb: Tensor) -> NoisePredictor:
        """The same network with the state and all T time embeddings (T, time_dim) folded in once:
        each step is then one small matmul on x_t plus the tail."""
        w_x, w_t, w_s = column_blocks(self.input.weight, [self.action_dim, self.time_dim, self.state_dim])
        fixed = F.linear(state, w_s, self.input.bias)  # (B, H)
        per_step = (fixed.unsqueeze(0) + F.linear(t_emb, w_t).unsqueeze(1)).unbind(0)  # T x (B, H)
        w_x_t, tail = w_x.t(), tail_weights(self.hidden, self.output)

        def predict(x_t: Tensor, t: int) -> Tensor:
            return mish_tail(torch.addmm(per_step[t], x_t, w_x_t), tail)

        return predict


class ScoreDenoiser(nn.Module):
    """Per-slot noise of the task scores, weights shared across slots (any Q).

    Input per slot: [that slot's noisy score, t_emb, task token, pooled state] -> hidden -> hidden
    (Mish) -> 1. The noisy [execute, steps] is left out: the decision denoiser sees the same pooled
    state, and without it everything but the slot's own score is fixed for a step, so a step costs one
    fused multiply-add on the scores plus the tail.
    """

    def __init__(self, token_dim: int, state_dim: int, hidden: int = 64, time_dim: int = 16) -> None:
        super().__init__()
        self.token_dim, self.state_dim, self.hidden_dim, self.time_dim = (
            token_dim,
            state_dim,
            hidden,
            time_dim,
        )
        self.input = nn.Linear(1 + time_dim + token_dim + state_dim, hidden)
        self.hidden = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, 1)

    def config(self) -> dict[str, Any]:
        return dict(
            token_dim=self.token_dim, state_dim=self.state_dim, hidden=self.hidden_dim, time_dim=self.time_dim
        )

    def forward(self, x_scores: Tensor, t_emb: Tensor, tokens: Tensor, state: Tensor) -> Tensor:
        """Reference form, one step: x_scores (B, Q), t_emb (B, time_dim), tokens (B, Q, D), state (B, S)
        -> predicted noise (B, Q)."""
        b, q, _ = tokens.shape
        per_slot = torch.cat(
            [
                x_scores.unsqueeze(-1),
                t_emb.unsqueeze(1).expand(-1, q, -1),
                tokens,
                state.unsqueeze(1).expand(-1, q, -1),
            ],
            dim=-1,
        )
        pre_activation = self.input(per_slot).view(b * q, self.hidden_dim)
        return mish_tail(pre_activation, tail_weights(self.hidden, self.output)).view(b, q)

    def conditioned(self, tokens: Tensor, state: Tensor, t_emb: Tensor) -> NoisePredictor:
        """The same network with tokens, state and all T time embeddings folded in once."""
        b, q, _ = tokens.shape
        sizes = [1, self.time_dim, self.token_dim, self.state_dim]
        w_score, w_t, w_token, w_s = column_blocks(self.input.weight, sizes)
        per_slot = F.linear(tokens, w_token) + F.linear(state, w_s, self.input.bias).unsqueeze(1)  # (B, Q, H)
        per_time = F.linear(t_emb, w_t)[:, None, None, :]  # (T, 1, 1, H)
        per_step = (
            (per_slot.unsqueeze(0) + per_time).view(-1, b * q, self.hidden_dim).unbind(0)
        )  # T x (BQ, H)
        w_score_row, tail = w_score.squeeze(1), tail_weights(self.hidden, self.output)

        def predict(x_scores: Tensor, t: int) -> Tensor:
            pre_activation = torch.addcmul(per_step[t], x_scores.reshape(b * q, 1), w_score_row)
            return mish_tail(pre_activation, tail).view(b, q)

        return predict


def column_blocks(weight: Tensor, widths: list[int]) -> list[Tensor]:
    """Views of consecutive column blocks (Tensor.split, without its per-call overhead at batch 1)."""
    bounds = [0]
    for width in widths:
        bounds.append(bounds[-1] + width)
    return [weight[:, start:end] for start, end in itertools.pairwise(bounds)]


TailWeights = tuple[Tensor, Tensor, Tensor, Tensor]


def tail_weights(hidden: nn.Linear, output: nn.Linear) -> TailWeights:
    """(hidden bias, hidden weight^T, output bias, output weight^T), taken once per reverse chain."""
    return hidden.bias, hidden.weight.t(), output.bias, output.weight.t()


def mish_tail(pre_activation: Tensor, weights: TailWeights) -> Tensor:
    """mish -> hidden -> mish -> output on (rows, H) pre-activations. Calls addmm directly: at batch 1
    the per-call overhead of nn.Linear (module dispatch, weight transpose) outweighs the matmul."""
    hidden_bias, hidden_weight_t, output_bias, output_weight_t = weights
    hidden = F.mish(torch.addmm(hidden_bias, F.mish(pre_activation), hidden_weight_t))
    return torch.addmm(output_bias, hidden, output_weight_t)


class LogStdHead(nn.Module):
    """log_std = clamp(Linear(mu)). Flat: Linear(A, A). Per-task (action_dim None): Linear(2, 2) on
    [execute, steps] and one shared Linear(1, 1) per score slot."""

    def __init__(self, action_dim: int | None, log_std_min: float = -5.0, log_std_max: float = 1.0) -> None:
        super().__init__()
        if not log_std_min < log_std_max:
            raise ValueError("need log_std_min < log_std_max")
        self.action_dim, self.log_std_min, self.log_std_max = action_dim, log_std_min, log_std_max
        width = action_dim if action_dim is not None else DECISION_DIM
        self.decision = nn.Linear(width, width)
        self.score = nn.Linear(1, 1) if action_dim is None else None

    def config(self) -> dict[str, Any]:
        return dict(action_dim=self.action_dim, log_std_min=self.log_std_min, log_std_max=self.log_std_max)

    def forward(self, mu: Tensor) -> Tensor:
        if self.score is None:
            raw = self.decision(mu)
        else:  # the shared 1 -> 1 layer as one fused multiply-add over all slots
            scores = torch.addcmul(self.score.bias, mu[:, DECISION_DIM:], self.score.weight)
            raw = torch.cat([self.decision(mu[:, :DECISION_DIM]), scores], dim=1)
        return raw.clamp(self.log_std_min, self.log_std_max)


def gaussian_sample(
    mu: Tensor,
    log_std: Tensor,
    counted: Tensor | None,
    deterministic: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """(action, log_prob): mu itself when deterministic, else mu + std * eps; the log-density of the
    action under N(mu, std^2), summed over the dimensions where `counted` is 1 (all when None).

    (action - mu) / std is eps exactly, so the density is written with eps: same value and same
    reparameterised gradient as Normal.log_prob, without the round trip through the action."""
    if deterministic:
        action, log_density = mu, -log_std - HALF_LOG_2PI
    else:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        action = torch.addcmul(mu, log_std.exp(), eps)
        log_density = -0.5 * eps.square() - log_std - HALF_LOG_2PI
    if counted is not None:
        log_density = log_density * counted
    return action, log_density.sum(-1)


def unpack_state(state: EncodedState | Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(pooled, task tokens, task valid mask); a bare tensor is a pooled feature with no masks."""
    if isinstance(state, Tensor):
        return state, None, None
    return state.pooled, state.task_tokens, state.task_valid


def counted_dimensions(task_valid: Tensor | None, like: Tensor) -> Tensor | None:
    """1 for execute, steps and valid score slots, 0 for padding slots, shaped and typed like the
    action `like`. None (count everything) without a mask."""
    if task_valid is None:
        return None
    if task_valid.shape[1] != like.shape[1] - DECISION_DIM:
        raise ValueError(f"{task_valid.shape[1]} task slots do not match an action of width {like.shape[1]}")
    decision = task_valid.new_ones(task_valid.shape[0], DECISION_DIM)
    return torch.cat([decision, task_valid], dim=1).to(like.dtype)


def check_layout(action_dim: int | None, token_dim: int | None) -> None:
    if (action_dim is None) == (token_dim is None):
        raise ValueError("give exactly one of action_dim (flat layout) or token_dim (per-task layout)")
    if action_dim is not None and action_dim <= DECISION_DIM:
        raise ValueError(f"action_dim must exceed {DECISION_DIM} (execute, steps, one score per task)")


class DiffusionActor(nn.Module):
    """EAT's actor: reverse diffusion chain for the mean action, then a Gaussian head (module docs)."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int | None = None,
        token_dim: int | None = None,
        hidden: int = 256,
        score_hidden: int = 64,
        time_dim: int = 16,
        steps: int = 10,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        log_std_min: float = -5.0,
        log_std_max: float = 1.0,
    ) -> None:
        super().__init__()
        check_layout(action_dim, token_dim)
        self._config: dict[str, Any] = dict(
            state_dim=state_dim,
            action_dim=action_dim,
            token_dim=token_dim,
            hidden=hidden,
            score_hidden=score_hidden,
            time_dim=time_dim,
            steps=steps,
            beta_min=beta_min,
            beta_max=beta_max,
            log_std_min=log_std_min,
            log_std_max=log_std_max,
        )
        self.action_dim = action_dim
        self.schedule = VPSchedule(steps, beta_min, beta_max)
        self.time_embedding = TimeEmbedding(time_dim)
        self.denoiser = Denoiser(action_dim or DECISION_DIM, state_dim, hidden, time_dim)
        self.score_denoiser = (
            ScoreDenoiser(token_dim, state_dim, score_hidden, time_dim) if token_dim is not None else None
        )
        self.log_std_head = LogStdHead(action_dim, log_std_min, log_std_max)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(
        self,
        state: EncodedState | Tensor,
        deterministic: bool = False,
        prior: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(action, log_prob, mu): action (B, 2+Q), log_prob (B,), mu (B, 2+Q) the chain's output.

        prior: x_T (B, 2+Q) to start the reverse chain from instead of fresh noise (LAD-TS)."""
        pooled, tokens, task_valid = unpack_state(state)
        mu = self.mean_action(pooled, tokens, deterministic, prior, generator)
        log_std = self.log_std_head(mu)
        action, log_prob = gaussian_sample(
            mu, log_std, counted_dimensions(task_valid, mu), deterministic, generator
        )
        return action, log_prob, mu

    def denoising_loss(
        self, state: EncodedState | Tensor, action: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B,) Diffusion-QL's behaviour-cloning loss of target actions (B, 2+Q): noise them to a random
        step t, predict the noise, squared error: execute's plus steps' plus the mean over valid slots'
        scores. It trains the noise networks directly, so unlike a loss on the chain's output it
        never loses its gradient to the x0 clamp."""
        pooled, tokens, task_valid = unpack_state(state)
        t = torch.randint(0, self.schedule.steps, (action.shape[0],), generator=generator)
        noise = torch.randn(action.shape, generator=generator, dtype=action.dtype)
        x_t = self.schedule.add_noise(action, t, noise)
        t_emb = self.time_embedding(t.to(action.dtype))
        if self.score_denoiser is None:
            predicted = self.denoiser(x_t, t_emb, pooled)
        else:
            assert tokens is not None, "the per-task layout needs task tokens"
            decision = self.denoiser(x_t[:, :DECISION_DIM], t_emb, pooled)
            scores = self.score_denoiser(x_t[:, DECISION_DIM:], t_emb, tokens, pooled)
            predicted = torch.cat([decision, scores], dim=1)
        # Three equal parts: execute, steps and the task scores (their mean over valid slots). A mean
        # over all 2+Q dimensions would give the step count, which decides a task's quality and run
        # time, a twelfth of the weight.
        error = (predicted - noise).square()
        scores = error[:, DECISION_DIM:]
        if task_valid is None:
            score_error = scores.mean(1)
        else:
            valid = task_valid.to(scores.dtype)
            score_error = (scores * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        return error[:, 0] + error[:, 1] + score_error

    def mean_action(
        self,
        pooled: Tensor,
        tokens: Tensor | None,
        deterministic: bool,
        prior: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Run the reverse chain from x_T to the mean action mu in [-1, 1]."""
        predict_noise = self._noise_predictor(pooled, tokens)
        x = self._chain_start(pooled, tokens, deterministic, prior, generator)
        for t in reversed(range(self.schedule.steps)):
            noise = None if deterministic or t == 0 else _randn_like(x, generator)
            x = self.schedule.posterior_step(x, predict_noise(x, t), t, noise)
        return x

    def _noise_predictor(self, pooled: Tensor, tokens: Tensor | None) -> NoisePredictor:
        t_emb = self.time_embedding(self.schedule.timesteps)
        decision = self.denoiser.conditioned(pooled, t_emb)
        if self.score_denoiser is None:
            return decision
        if tokens is None:
            raise ValueError(
                "the per-task layout needs task tokens (use the AttentionEncoder's EncodedState)"
            )
        scores = self.score_denoiser.conditioned(tokens, pooled, t_emb)

        def predict(x_t: Tensor, t: int) -> Tensor:
            return torch.cat([decision(x_t[:, :DECISION_DIM], t), scores(x_t[:, DECISION_DIM:], t)], dim=1)

        return predict

    def _chain_start(
        self,
        pooled: Tensor,
        tokens: Tensor | None,
        deterministic: bool,
        prior: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        shape = (pooled.shape[0], self._action_width(tokens))
        if prior is not None:
            if tuple(prior.shape) != shape:
                raise ValueError(f"prior must have shape {shape}, got {tuple(prior.shape)}")
            return prior.to(dtype=pooled.dtype, device=pooled.device)
        if deterministic:
            return pooled.new_zeros(shape)
        return torch.randn(shape, generator=generator, device=pooled.device, dtype=pooled.dtype)

    def _action_width(self, tokens: Tensor | None) -> int:
        if self.action_dim is not None:
            return self.action_dim
        assert tokens is not None, "checked by _noise_predictor"
        return DECISION_DIM + tokens.shape[1]


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """in -> hidden -> hidden (Mish) -> out."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, out_dim)
    )


class GaussianActor(nn.Module):
    """The ablations' actor without diffusion (EAT-D, EAT-DA): mean = tanh(MLP), log_std from a linear
    layer on the mean, sampled without a second squash, exactly as `DiffusionActor`'s head.

    Per-task layout: an MLP on the pooled state gives [execute, steps]; a shared MLP on [task token,
    pooled state] gives each slot's score. Flat layout: one MLP gives all 2+Q."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int | None = None,
        token_dim: int | None = None,
        hidden: int = 256,
        score_hidden: int = 64,
        log_std_min: float = -5.0,
        log_std_max: float = 1.0,
    ) -> None:
        super().__init__()
        check_layout(action_dim, token_dim)
        self._config: dict[str, Any] = dict(
            state_dim=state_dim,
            action_dim=action_dim,
            token_dim=token_dim,
            hidden=hidden,
            score_hidden=score_hidden,
            log_std_min=log_std_min,
            log_std_max=log_std_max,
        )
        self.decision = mlp(state_dim, hidden, action_dim or DECISION_DIM)
        self.score_head = mlp(token_dim + state_dim, score_hidden, 1) if token_dim is not None else None
        self.log_std_head = LogStdHead(action_dim, log_std_min, log_std_max)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(
        self,
        state: EncodedState | Tensor,
        deterministic: bool = False,
        prior: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(action, log_prob, mu), as `DiffusionActor.forward`; there is no chain, so no prior."""
        if prior is not None:
            raise ValueError("GaussianActor has no reverse chain to start from a prior")
        pooled, tokens, task_valid = unpack_state(state)
        mu = torch.tanh(self._raw_mean(pooled, tokens))
        log_std = self.log_std_head(mu)
        action, log_prob = gaussian_sample(
            mu, log_std, counted_dimensions(task_valid, mu), deterministic, generator
        )
        return action, log_prob, mu

    def _raw_mean(self, pooled: Tensor, tokens: Tensor | None) -> Tensor:
        decision = self.decision(pooled)
        if self.score_head is None:
            return decision
        if tokens is None:
            raise ValueError(
                "the per-task layout needs task tokens (use the AttentionEncoder's EncodedState)"
            )
        per_slot = torch.cat([tokens, pooled.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)
        return torch.cat([decision, self.score_head(per_slot).squeeze(-1)], dim=1)
