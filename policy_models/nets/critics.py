"""Twin Q critics (paper V-C2, clipped double Q as in SAC) and the soft target update (eq. 22).

Each Q network is an MLP: input -> hidden -> hidden (Mish) -> scalar. What the input is depends on the
layout, which matches the actor's:
- flat (`action_dim` given; with `FlatEncoder`): [pooled state, action].
- per-task (`token_dim` given; with `AttentionEncoder`, any Q): the simulator acts on [execute, steps]
  and on ONE task, the best-scoring feasible slot; the other scores have no effect. The critic therefore
  reads [pooled state, execute, steps, chosen-task embedding], where the chosen-task embedding is the
  task tokens averaged with softmax(score / temperature) weights over the feasible slots: a
  differentiable stand-in for the selector's argmax that has no Q-sized parameter and is invariant to
  slot order. With no feasible slot nothing can launch, and the embedding is zero.
Actions are clipped to [-1, 1] first, as the simulator does, so Q(s, a) = Q(s, clip(a)) by construction.
A residual critic (`residual=True`, for residual agents, `learning.hints`) takes the actor's output and
first turns it into the action it stands for, clip(hint + 2 * output), with the hint the encoder read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from policy_models.nets.diffusion import DECISION_DIM, check_layout, mlp
from policy_models.nets.encoders import EncodedState, residual_to_action


class TwinCritic(nn.Module):
    """(q1, q2), each (B,), for a batch of encoded states and actions (B, 2+Q)."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int | None = None,
        token_dim: int | None = None,
        hidden: int = 256,
        score_temperature: float = 0.1,
        residual: bool = False,
        residual_deadzone: float = 0.0,
    ) -> None:
        super().__init__()
        check_layout(action_dim, token_dim)
        if score_temperature <= 0:
            raise ValueError("score_temperature must be > 0")
        self._config: dict[str, Any] = dict(
            state_dim=state_dim,
            action_dim=action_dim,
            token_dim=token_dim,
            hidden=hidden,
            score_temperature=score_temperature,
        )
        if residual:  # written only when on: configs of earlier checkpoints stay as they were
            self._config["residual"] = True
        if residual and residual_deadzone > 0.0:
            self._config["residual_deadzone"] = residual_deadzone
        self.residual = residual
        self.residual_deadzone = residual_deadzone
        self.per_task = token_dim is not None
        self.score_temperature = score_temperature
        in_dim = state_dim + (DECISION_DIM + token_dim if token_dim is not None else action_dim or 0)
        self.q1 = mlp(in_dim, hidden, 1)
        self.q2 = mlp(in_dim, hidden, 1)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, state: EncodedState, action: Tensor) -> tuple[Tensor, Tensor]:
        if self.residual:
            if state.hint is None:
                raise ValueError("a residual critic needs the hint in the encoded state (a hinted encoder)")
            action = residual_to_action(action.clamp(-1.0, 1.0), state.hint, self.residual_deadzone)
        features = self.input_features(state, action.clamp(-1.0, 1.0))
        return self.q1(features).squeeze(-1), self.q2(features).squeeze(-1)

    def input_features(self, state: EncodedState, action: Tensor) -> Tensor:
        if not self.per_task:
            return torch.cat([state.pooled, action], dim=-1)
        if state.task_tokens is None:
            raise ValueError(
                "the per-task critic needs task tokens (use the AttentionEncoder's EncodedState)"
            )
        chosen = chosen_task_embedding(
            state.task_tokens, action[:, DECISION_DIM:], state.task_feasible, self.score_temperature
        )
        return torch.cat([state.pooled, action[:, :DECISION_DIM], chosen], dim=-1)


def chosen_task_embedding(tokens: Tensor, scores: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """Softmax(scores / temperature) over the candidate slots, applied to the tokens: (B, D).

    Masked slots get the most negative finite logit rather than -inf, so a row without a candidate
    yields a uniform softmax (not NaN) that the final masking turns into zeros."""
    logits = (scores / temperature).masked_fill(~candidates, torch.finfo(scores.dtype).min)
    weights = torch.softmax(logits, dim=-1) * candidates.to(scores.dtype)
    return torch.bmm(weights.unsqueeze(1), tokens).squeeze(1)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source for every parameter; buffers are copied."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    for target_param, source_param in zip(target.parameters(), source.parameters(), strict=True):
        target_param.lerp_(source_param, tau)
    for target_buffer, source_buffer in zip(target.buffers(), source.buffers(), strict=True):
        target_buffer.copy_(source_buffer)
