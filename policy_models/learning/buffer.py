"""Experience replay: a ring of transitions with observation tokens, kept as NumPy arrays.

Observations are the simulator's token dicts ({"servers", "tasks", "globals"}) of one cluster shape,
plus the "hint" entry for hinted agents (`learning.hints`): the buffer keeps whatever entries its
`obs_shapes` name.
The buffer saves to safetensors + JSON (the trainer persists it across restarts); nothing is pickled.

A buffer made `with_priors` (lad-ts) also keeps, per transition, the prior the actor's reverse chain
started from at s and the prior it would start from at s', as LAD-TS stores (s, a, prior, r, s', prior').
Other buffers neither take nor save them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from policy_models.nets.encoders import observation_keys
from policy_models.obs import Observation

BUFFER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TransitionBatch:
    obs: Observation
    action: np.ndarray  # (B, A)
    reward: np.ndarray  # (B,)
    next_obs: Observation
    done: np.ndarray  # (B,) 1.0 where the value of next_obs must not be bootstrapped
    prior: np.ndarray | None = None  # (B, A) chain start at obs (buffers with priors only)
    next_prior: np.ndarray | None = None  # (B, A) chain start at next_obs


class ReplayBuffer:
    """Fixed-capacity ring buffer; `add` takes whole batches (one row per environment)."""

    def __init__(
        self,
        obs_shapes: dict[str, tuple[int, ...]],
        action_dim: int,
        capacity: int,
        seed: int = 0,
        with_priors: bool = False,
    ):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.obs_shapes = {key: tuple(obs_shapes[key]) for key in observation_keys(obs_shapes)}
        self.action_dim = action_dim
        self.with_priors = with_priors
        prior_rows = capacity if with_priors else 0  # other algorithms allocate nothing
        self._prior = np.zeros((prior_rows, action_dim), dtype=np.float32)
        self._next_prior = np.zeros((prior_rows, action_dim), dtype=np.float32)
        self._obs = {k: np.zeros((capacity, *s), dtype=np.float32) for k, s in self.obs_shapes.items()}
        self._next = {k: np.zeros((capacity, *s), dtype=np.float32) for k, s in self.obs_shapes.items()}
        self._action = np.zeros((capacity, action_dim), dtype=np.float32)
        self._reward = np.zeros(capacity, dtype=np.float32)
        self._done = np.zeros(capacity, dtype=np.float32)
        self._cursor = 0
        self._size = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._size

    def add(
        self,
        obs: Observation,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: Observation,
        done: np.ndarray,
        prior: np.ndarray | None = None,
        next_prior: np.ndarray | None = None,
    ) -> None:
        self._check_priors(prior, next_prior)
        n = len(reward)
        if n > self.capacity:  # only the newest rows fit
            keep = slice(n - self.capacity, n)
            obs, next_obs = _rows(obs, keep), _rows(next_obs, keep)
            action, reward, done, n = action[keep], reward[keep], done[keep], self.capacity
            if prior is not None and next_prior is not None:
                prior, next_prior = prior[keep], next_prior[keep]
        index = (self._cursor + np.arange(n)) % self.capacity
        if prior is not None and next_prior is not None:
            self._prior[index] = prior
            self._next_prior[index] = next_prior
        for key in self.obs_shapes:
            self._obs[key][index] = obs[key]
            self._next[key][index] = next_obs[key]
        self._action[index] = action
        self._reward[index] = reward
        self._done[index] = done
        self._cursor = int((self._cursor + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def _check_priors(self, prior: np.ndarray | None, next_prior: np.ndarray | None) -> None:
        given = (prior is not None, next_prior is not None)
        if given != (self.with_priors, self.with_priors):
            wanted = "both prior and next_prior" if self.with_priors else "no priors"
            raise ValueError(f"this buffer (with_priors={self.with_priors}) takes {wanted}")

    def sample(self, batch_size: int) -> TransitionBatch:
        if self._size == 0:
            raise ValueError("cannot sample from an empty buffer")
        index = self._rng.integers(0, self._size, size=batch_size)
        return TransitionBatch(
            obs=_rows(self._obs, index),
            action=self._action[index],
            reward=self._reward[index],
            next_obs=_rows(self._next, index),
            done=self._done[index],
            prior=self._prior[index] if self.with_priors else None,
            next_prior=self._next_prior[index] if self.with_priors else None,
        )

    # ----- persistence -------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the filled part as safetensors plus a JSON description (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        order = self._chronological()
        tensors = {f"obs.{k}": v[order] for k, v in self._obs.items()}
        tensors |= {f"next_obs.{k}": v[order] for k, v in self._next.items()}
        tensors |= {"action": self._action[order], "reward": self._reward[order], "done": self._done[order]}
        if self.with_priors:
            tensors |= {"prior": self._prior[order], "next_prior": self._next_prior[order]}
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, directory / "buffer.safetensors")
        meta = {
            "format_version": BUFFER_FORMAT_VERSION,
            "capacity": self.capacity,
            "size": self._size,
            "obs_shapes": {k: list(s) for k, s in self.obs_shapes.items()},
            "action_dim": self.action_dim,
            "with_priors": self.with_priors,
        }
        (directory / "buffer.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path, seed: int = 0) -> ReplayBuffer:
        meta = json.loads((directory / "buffer.json").read_text())
        if meta.get("format_version") != BUFFER_FORMAT_VERSION:
            raise ValueError(f"unsupported replay buffer format {meta.get('format_version')!r}")
        shapes = {k: tuple(v) for k, v in meta["obs_shapes"].items()}
        with_priors = bool(meta.get("with_priors", False))  # absent in buffers saved before lad-ts
        buffer = cls(shapes, meta["action_dim"], meta["capacity"], seed=seed, with_priors=with_priors)
        tensors = load_file(str(directory / "buffer.safetensors"))
        if meta["size"]:
            buffer.add(
                {k: tensors[f"obs.{k}"] for k in shapes},
                tensors["action"],
                tensors["reward"],
                {k: tensors[f"next_obs.{k}"] for k in shapes},
                tensors["done"],
                prior=tensors.get("prior"),
                next_prior=tensors.get("next_prior"),
            )
        return buffer

    def _chronological(self) -> np.ndarray:
        if self._size < self.capacity:
            return np.arange(self._size)
        return (self._cursor + np.arange(self.capacity)) % self.capacity


def _rows(obs: Observation, index: np.ndarray | slice) -> Observation:
    return {key: obs[key][index] for key in observation_keys(obs)}
