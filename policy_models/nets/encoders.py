"""State encoders: observation tokens -> a pooled state feature and per-task token embeddings.

`AttentionEncoder` is EAT's feature extractor (paper V-B1): every server, every visible task and the
globals become one token each, and self-attention mixes them. It has no parameter sized by the number
of servers N or the visible queue length Q, and no positional encoding, so one network serves any
cluster: task outputs are permutation-equivariant over task slots and the pooled feature is invariant
to the order of servers (tests hold it to both).

`FlatEncoder` is the ablations' MLP over the flattened observation (fixed N and Q).

Both return an `EncodedState`, which also carries the task slot masks the actor and critic need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_models.obs import T_IDX, Observation

TensorObservation = dict[str, Tensor]  # {"servers": (B,N,Fs), "tasks": (B,Q,Ft), "globals": (B,G)}
OBS_KEYS = ("servers", "tasks", "globals")
# Optional entry of hinted agents' observations: a heuristic's action on the same state, (B, 2 + Q)
# [execute, steps, score_1..score_Q] (`learning.hints`). Read by encoders built with `hint=True`.
HINT_KEY = "hint"
RESIDUAL_SCALE = 2.0  # a residual output of +-1 moves an action entry by 2: across all of [-1, 1]


class EncodedState(NamedTuple):
    """What the actor and critic read. Unpacks as (pooled, task_tokens, task_valid, task_feasible, hint)."""

    pooled: Tensor  # (B, D) state feature
    task_tokens: Tensor | None  # (B, Q, D) per-task embeddings; None for the flat encoder
    task_valid: Tensor  # (B, Q) bool: the slot holds a task
    task_feasible: Tensor  # (B, Q) bool: the simulator's launch candidates (valid and enough idle servers)
    hint: Tensor | None = None  # (B, 2+Q) hinted encoders: the hint they read (residual critics need it)


def as_tensors(obs: Observation, device: torch.device | str | None = None) -> TensorObservation:
    """Numpy observation -> float32 tensors (zero-copy on CPU); adds the batch dimension if missing.
    The hint entry is converted too where there is one."""
    unbatched = np.ndim(obs["globals"]) == 1
    out: TensorObservation = {}
    for key in observation_keys(obs):
        array = np.asarray(obs[key], dtype=np.float32)
        tensor = torch.from_numpy(array[None] if unbatched else array)
        out[key] = tensor.to(device) if device is not None else tensor
    return out


def residual_to_action(output: Tensor, hint: Tensor, deadzone: float = 0.0) -> Tensor:
    """The action a residual agent's output stands for: clip(hint + RESIDUAL_SCALE * output, -1, 1).

    With a dead zone, output entries within `deadzone` of 0 count as 0 and the others shrink towards 0
    by it: a learned correction's small noise then leaves the hint's decision (its exact step count,
    its task) alone, and only a deliberate correction changes it."""
    return (hint + RESIDUAL_SCALE * shrink(output, deadzone)).clamp(-1.0, 1.0)


def shrink(output: Tensor, deadzone: float) -> Tensor:
    """Soft threshold: sign(x) * max(|x| - deadzone, 0) (the identity for deadzone 0)."""
    if deadzone <= 0.0:
        return output
    return torch.sign(output) * (output.abs() - deadzone).clamp(min=0.0)


def observation_keys(obs: Mapping[str, Any]) -> tuple[str, ...]:
    """The entries of an observation in their fixed order: OBS_KEYS, then the hint if present."""
    return (*OBS_KEYS, HINT_KEY) if HINT_KEY in obs else OBS_KEYS


def task_masks(tasks: Tensor, valid_index: int, feasible_index: int) -> tuple[Tensor, Tensor]:
    """(valid, feasible) boolean slot masks from the task tokens' 0/1 feature columns."""
    valid = tasks[..., valid_index] > 0.5
    feasible = valid & (tasks[..., feasible_index] > 0.5)
    return valid, feasible


class AttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: multi-head self-attention, then a GELU feed-forward.

    Written on `F.scaled_dot_product_attention` rather than `nn.TransformerEncoderLayer` because the
    latter switches to a different fused kernel in eval/no-grad mode (training and serving would run
    different code) and was ~35% slower here at batch 1 with ~15 tokens.
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.heads = heads
        self.norm_attention = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attention_out = nn.Linear(d_model, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff_in = nn.Linear(d_model, ff_dim)
        self.ff_out = nn.Linear(ff_dim, d_model)

    def forward(self, tokens: Tensor, attention_bias: Tensor) -> Tensor:
        """tokens (B, T, D); attention_bias (B, 1, 1, T): 0 where a key may be attended to, -inf where
        not (an additive mask built once for all blocks; a boolean one is converted in every call)."""
        b, t, d = tokens.shape
        qkv = self.qkv(self.norm_attention(tokens)).view(b, t, 3, self.heads, d // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D/H)
        mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_bias)
        tokens = tokens + self.attention_out(mixed.transpose(1, 2).reshape(b, t, d))
        hidden = F.gelu(self.ff_in(self.norm_ff(tokens)), approximate="tanh")
        return tokens + self.ff_out(hidden)


class AttentionEncoder(nn.Module):
    """Tokens [globals, servers..., tasks...] -> self-attention -> (pooled feature, task embeddings).

    Each token type has its own linear embedding plus a learned type embedding. Invalid task slots are
    key-padding-masked: no token attends to them, so their content never reaches a valid token.
    Pooled feature = Linear(concat[globals token, mean of server tokens, masked mean of valid task
    tokens]): means make it invariant to server order and to the number of padding slots, the globals
    token gives attention a place to summarise, and the linear mix keeps the three apart. With no valid
    task the task mean is zero.
    """

    def __init__(
        self,
        server_features: int,
        task_features: int,
        global_features: int,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 128,
        valid_index: int = T_IDX["valid"],
        feasible_index: int = T_IDX["feasible"],
        hint: bool = False,
    ) -> None:
        super().__init__()
        self._config: dict[str, Any] = dict(
            server_features=server_features,
            task_features=task_features,
            global_features=global_features,
            d_model=d_model,
            heads=heads,
            layers=layers,
            ff_dim=ff_dim,
            valid_index=valid_index,
            feasible_index=feasible_index,
        )
        if hint:  # written only when on, so configs of unhinted checkpoints stay as they were
            self._config["hint"] = True
        self.valid_index, self.feasible_index = valid_index, feasible_index
        self.hint = hint
        self.out_dim = d_model
        self.server_embed = nn.Linear(server_features, d_model)
        # A hint adds its slot's score to each task token and [execute, steps] to the globals token.
        self.task_embed = nn.Linear(task_features + hint, d_model)
        self.global_embed = nn.Linear(global_features + 2 * hint, d_model)
        # rows: globals, server, task
        self.type_embedding = nn.Parameter(torch.randn(3, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(AttentionBlock(d_model, heads, ff_dim) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.pool = nn.Linear(3 * d_model, d_model)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, obs: TensorObservation) -> EncodedState:
        servers, tasks, globals_ = obs["servers"], obs["tasks"], obs["globals"]
        n = servers.shape[1]
        valid, feasible = task_masks(tasks, self.valid_index, self.feasible_index)
        hint = obs[HINT_KEY] if self.hint else None
        if hint is not None:
            tasks = torch.cat([tasks, hint[:, 2:, None]], dim=-1)
            globals_ = torch.cat([globals_, hint[:, :2]], dim=-1)
        tokens = torch.cat(
            [
                (self.global_embed(globals_) + self.type_embedding[0]).unsqueeze(1),
                self.server_embed(servers) + self.type_embedding[1],
                self.task_embed(tasks) + self.type_embedding[2],
            ],
            dim=1,
        )
        attention_bias = key_padding_bias(valid, n_leading=1 + n, dtype=tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, attention_bias)
        tokens = self.final_norm(tokens)
        task_tokens = tokens[:, 1 + n :]
        pooled = self.pool(
            torch.cat([tokens[:, 0], tokens[:, 1 : 1 + n].mean(1), masked_mean(task_tokens, valid)], dim=-1)
        )
        return EncodedState(pooled, task_tokens, valid, feasible, hint)


def key_padding_bias(valid: Tensor, n_leading: int, dtype: torch.dtype) -> Tensor:
    """(B, 1, 1, n_leading + Q) additive attention mask: 0 for the leading tokens (globals, servers:
    never padding) and valid task slots, -inf for padding slots."""
    bias = torch.zeros(valid.shape[0], 1, 1, n_leading + valid.shape[1], dtype=dtype, device=valid.device)
    bias[..., n_leading:].masked_fill_(~valid[:, None, None, :], float("-inf"))
    return bias


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of the tokens where mask is True; zeros where no token is."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    count = weights.sum(1).clamp_min(1.0)
    return (tokens * weights).sum(1) / count


class FlatEncoder(nn.Module):
    """The ablations' encoder (EAT-A / EAT-DA): an MLP (Mish) over the flattened observation.

    Sized for one (N, Q): `obs_shapes` is `ObservationSpec.shapes`, plus the hint's shape (2 + Q,) for
    a hinted agent (the hint is then flattened in with the rest). `task_tokens` is None.
    """

    def __init__(
        self,
        obs_shapes: Mapping[str, Sequence[int]],
        hidden: int = 256,
        valid_index: int = T_IDX["valid"],
        feasible_index: int = T_IDX["feasible"],
    ) -> None:
        super().__init__()
        self.keys = observation_keys(obs_shapes)
        self.obs_shapes = {key: tuple(int(v) for v in obs_shapes[key]) for key in self.keys}
        self.hidden = hidden
        self.valid_index, self.feasible_index = valid_index, feasible_index
        self.out_dim = hidden
        in_dim = sum(math.prod(shape) for shape in self.obs_shapes.values())
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish())

    def config(self) -> dict[str, Any]:
        return dict(
            obs_shapes={key: list(shape) for key, shape in self.obs_shapes.items()},
            hidden=self.hidden,
            valid_index=self.valid_index,
            feasible_index=self.feasible_index,
        )

    def forward(self, obs: TensorObservation) -> EncodedState:
        for key in self.keys:
            if tuple(obs[key].shape[1:]) != self.obs_shapes[key]:
                raise ValueError(
                    f"FlatEncoder built for {key} {self.obs_shapes[key]}, got {tuple(obs[key].shape[1:])}"
                )
        flat = torch.cat([obs[key].flatten(1) for key in self.keys], dim=1)
        valid, feasible = task_masks(obs["tasks"], self.valid_index, self.feasible_index)
        return EncodedState(
            self.net(flat), None, valid, feasible, obs.get(HINT_KEY) if HINT_KEY in self.keys else None
        )
