"""LAD-TS's action prior, keyed so that a live scheduler can use it: an EMA of past mean actions per
coarse cluster-state bucket.

LAD-TS (Related systems notes) starts the diffusion actor's reverse chain from the action the policy
took at the same decision slot of the previous episode and writes the chain's output back as the next
prior. A live cluster has no replayed episode to index into, so here the prior is keyed by what the
observation says about the cluster right now:

  state bucket   = idle bin x queue bin x reusable-visible
    idle bin         globals.idle_frac against `idle_edges` (right-closed): with the defaults
                     (0, 0.25, 0.5): none idle | (0, 1/4] | (1/4, 1/2] | more than half idle
    queue bin        globals.queue_len (waiting tasks / visible slots) against `queue_edges`: with the
                     defaults (0, 0.5, 1): empty | up to half the window | up to full | overflowing
    reusable-visible 1 when some visible task can start now without loading its model
  slot class     = per task slot: 0 empty | 1 waiting (not enough idle servers) | 2 feasible but needs
                   a model load | 3 reusable (its model is warm on enough idle servers; implies feasible)

The two decision components [execute, steps] are kept per state bucket; each slot's score is kept
per (state bucket, slot class), so the table has no dimension that depends on Q and one prior
serves any cluster size and queue window. Both keys are fractions and flags of the observation,
hence deterministic. Empty slots keep a prior of 0 (EAT's deterministic chain start): the simulator
never reads their score and the actor gets no training signal there, so following their mean
action would only feed the chain's drift back into itself.

`update` moves every key seen in a batch toward the batch's mean of the mean actions (the chain's
output mu, as LAD-TS writes back) by exactly (1 - decay). Training updates the prior after every
acting step; evaluation reads it frozen, so a deterministic policy stays a fixed function of its
observation (the live policy server may choose to keep updating it online).

It is an `nn.Module` only as a container of buffers: the checkpoint code then saves it with the
networks (safetensors, sha256-verified, restored strictly on resume and by `LearnedPolicy`). It has
no parameters and no forward; it reads and returns NumPy arrays, as the simulators produce them, so
its buffers stay on the CPU (the actor moves the prior to its own device).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from policy_models.obs import G_IDX, T_IDX, Observation

DECISION_DIM = 2  # [execute, steps] lead every action; the rest are per-slot scores
DEFAULT_DECAY = 0.99
DEFAULT_IDLE_EDGES: tuple[float, ...] = (0.0, 0.25, 0.5)
DEFAULT_QUEUE_EDGES: tuple[float, ...] = (0.0, 0.5, 1.0)
EMPTY_SLOT, WAITING_SLOT, FEASIBLE_SLOT, REUSABLE_SLOT = range(4)
SLOT_CLASSES = 4


class ActionPrior(nn.Module):
    """EMA of past mean actions per cluster-state bucket (module docs); x_T for LAD-TS's chain."""

    decision_table: torch.Tensor  # (n_buckets, decision_dim)
    score_table: torch.Tensor  # (n_buckets, SLOT_CLASSES)
    decision_updates: torch.Tensor  # (n_buckets,) EMA steps taken per key (a coverage diagnostic)
    score_updates: torch.Tensor  # (n_buckets, SLOT_CLASSES)

    def __init__(
        self,
        decay: float = DEFAULT_DECAY,
        idle_edges: Sequence[float] = DEFAULT_IDLE_EDGES,
        queue_edges: Sequence[float] = DEFAULT_QUEUE_EDGES,
        decision_dim: int = DECISION_DIM,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        if decision_dim < 1:
            raise ValueError(f"decision_dim must be >= 1, got {decision_dim}")
        self.decay = float(decay)
        self.idle_edges = _ascending(idle_edges, "idle_edges")
        self.queue_edges = _ascending(queue_edges, "queue_edges")
        self.decision_dim = decision_dim
        # Compared in float32, as the observation is: an edge equal to a representable fraction
        # (1/4 idle) then puts that fraction on the documented side.
        self._idle_edges32 = np.asarray(self.idle_edges, dtype=np.float32)
        self._queue_edges32 = np.asarray(self.queue_edges, dtype=np.float32)
        n = self.n_buckets
        self.register_buffer("decision_table", torch.zeros(n, decision_dim))
        self.register_buffer("score_table", torch.zeros(n, SLOT_CLASSES))
        self.register_buffer("decision_updates", torch.zeros(n, dtype=torch.int64))
        self.register_buffer("score_updates", torch.zeros(n, SLOT_CLASSES, dtype=torch.int64))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (checkpoints rebuild the module from them)."""
        return dict(
            decay=self.decay,
            idle_edges=list(self.idle_edges),
            queue_edges=list(self.queue_edges),
            decision_dim=self.decision_dim,
        )

    @property
    def n_buckets(self) -> int:
        return (len(self.idle_edges) + 1) * (len(self.queue_edges) + 1) * 2

    # ----- keys --------------------------------------------------------------------------------------
    def bucket(self, obs: Observation) -> np.ndarray:
        """(B,) int64 state bucket in [0, n_buckets): idle bin, queue bin, reusable task visible."""
        return self._keys(obs)[0]

    def _keys(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """(state bucket (B,), slot class (B, Q)); the bucket reads the slot classes."""
        slots = self.slot_class(obs)
        glob = obs["globals"]
        idle_bin = np.digitize(glob[:, G_IDX["idle_frac"]], self._idle_edges32, right=True)
        queue_bin = np.digitize(glob[:, G_IDX["queue_len"]], self._queue_edges32, right=True)
        reusable_visible = slots.max(axis=1, initial=EMPTY_SLOT) == REUSABLE_SLOT
        n_queue_bins = len(self.queue_edges) + 1
        bucket = (idle_bin * n_queue_bins + queue_bin) * 2 + reusable_visible
        return bucket.astype(np.int64), slots

    @staticmethod
    def slot_class(obs: Observation) -> np.ndarray:
        """(B, Q) int64: empty, waiting, feasible (needs a load) or reusable, per task slot."""
        tasks = obs["tasks"]
        valid = tasks[..., T_IDX["valid"]] > 0.5
        feasible = tasks[..., T_IDX["feasible"]] > 0.5
        reusable = tasks[..., T_IDX["reusable"]] > 0.5
        ready = np.where(reusable, REUSABLE_SLOT, np.where(feasible, FEASIBLE_SLOT, WAITING_SLOT))
        return np.where(valid, ready, EMPTY_SLOT).astype(np.int64)

    # ----- reading and updating ----------------------------------------------------------------------
    def prior(self, obs: Observation) -> np.ndarray:
        """(B, decision_dim + Q) float32: the decision prior of each row's bucket, then each slot's
        score prior for (bucket, slot class)."""
        bucket, slots = self._keys(obs)
        decision = self.decision_table.numpy()[bucket]
        scores = self.score_table.numpy()[bucket[:, None], slots]
        return np.concatenate([decision, scores], axis=1).astype(np.float32, copy=False)

    @torch.no_grad()
    def update(self, obs: Observation, mean_action: np.ndarray) -> None:
        """One EMA step toward this batch's mean action for every key it touches:
        table <- decay * table + (1 - decay) * batch mean (keys absent from the batch stay)."""
        mean_action = np.asarray(mean_action, dtype=np.float64)
        width = self.decision_dim + obs["tasks"].shape[1]
        if mean_action.shape != (obs["tasks"].shape[0], width):
            raise ValueError(f"mean_action must be (B, {width}), got {mean_action.shape}")
        bucket, slots = self._keys(obs)
        self._ema(self.decision_table, self.decision_updates, bucket, mean_action[:, : self.decision_dim])
        occupied = slots != EMPTY_SLOT  # empty slots keep their prior (module docs)
        score_key = (bucket[:, None] * SLOT_CLASSES + slots)[occupied]
        self._ema(
            self.score_table.view(-1, 1),
            self.score_updates.view(-1),
            score_key,
            mean_action[:, self.decision_dim :][occupied][:, None],
        )

    def _ema(self, table: torch.Tensor, updates: torch.Tensor, keys: np.ndarray, values: np.ndarray) -> None:
        """table[key] moves (1 - decay) of the way to the mean of `values` rows with that key."""
        n_keys = table.shape[0]
        counts = np.bincount(keys, minlength=n_keys)
        sums = np.zeros((n_keys, values.shape[1]))
        np.add.at(sums, keys, values)
        seen = counts > 0
        target = sums[seen] / counts[seen, None]
        rows = table.numpy()  # shares memory with the buffer: written in place
        rows[seen] = self.decay * rows[seen] + (1.0 - self.decay) * target
        updates.numpy()[seen] += 1


def _ascending(edges: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(float(edge) for edge in edges)
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{name} must be strictly ascending, got {values}")
    return values
