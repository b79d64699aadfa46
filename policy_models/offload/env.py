"""The sequential placement process over B instances at once, with array code.

Users are placed one at a time, by latency weight descending: new batches join the end of a server's
queue, so the users placed first get the front places, and those are worth most to the impatient (the
weighted-shortest-job rule, with the weight first). At each step the current user goes to one
candidate: local, a new batch at the end of server k, or an existing non-full batch m of server k. The
reward is the increase of the total utility of the users placed so far, so the return of an episode is
the final total utility.

Two ways to split:

- "convex": every batch's split is the exact optimum for the current placement (`model.solve_splits`
  gives the same), re-solved after every step; a placement changes the splits of the batch it joins
  and of every batch ahead of it on that server (their lambda mass behind grows).
- "chosen": a new batch takes its split from `SPLIT_FRACTIONS` (one candidate per choice) and keeps
  it; there is no solver.

State layout: per-batch arrays of shape (B, K, N) (a server never holds more than N batches), so a
candidate's effect on every batch ahead of it is a prefix sum along the last axis. `observe()` gives
every candidate its exact utility increase and the placed user's own outcome there (what the greedy
baselines maximise) and the features the network scores; `step()` applies one action per instance and
recomputes the total from scratch, so the reward never drifts from the scalar `model.score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from policy_models.offload.model import Assignment, Batch, Instance

SplitMode = Literal["convex", "chosen"]
SPLIT_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)
LAMBDA_SCALE = 0.1  # the top of the default latency weight range
LATENCY_SCALE_S = 20.0  # a typical local latency
FEATURES = (
    "is_local",
    "is_new",
    "is_join",
    "delta",  # exact increase of the total utility
    "delta_minus_best",
    "own_utility",
    "own_latency",
    "own_accuracy",
    "split",  # of the candidate's batch after the placement, / T
    "batch_size",  # after the placement, / max_batch
    "room_left",  # places left in the batch after the placement, / max_batch
    "batches_behind",  # on the server, / N
    "lambda_behind",  # lambda mass queued behind the batch, / (N lambda scale)
    "availability",
    "server_busy",  # edge seconds queued on the server before the placement, / latency scale
    "server_lambda",  # lambda mass on the server, / (N lambda scale)
    "user_lambda",
    "user_log_speed",
    "user_local_utility",
    "remaining",  # share of users not placed yet (this one excluded)
    "remaining_per_server",  # users not placed yet per server / max_batch
    "remaining_lambda_per_server",  # their lambda mass per server / lambda scale
    "log_users",
    "log_servers",
)
N_FEATURES = len(FEATURES)


def split_choices(steps: int) -> np.ndarray:
    """The splits a new batch may take in "chosen" mode."""
    return np.unique(np.clip(np.round(np.asarray(SPLIT_FRACTIONS) * steps), 1, steps)).astype(np.int64)


def placement_order(latency_weight: np.ndarray) -> np.ndarray:
    """Users by latency weight descending (ties by index)."""
    return np.argsort(-latency_weight, kind="stable")


@dataclass(frozen=True)
class Candidates:
    """Every candidate of the current user in each instance. Layout along the last axis: local, then
    new batch per (server, split choice), then join per (server, batch slot < width)."""

    features: np.ndarray  # (B, C, F) float32
    valid: np.ndarray  # (B, C) bool
    delta: np.ndarray  # (B, C) exact increase of the total utility
    own: np.ndarray  # (B, C) the placed user's own utility there


class OffloadEnvs:
    """B instances of one size (N users, K servers, same curve and timing constants) placed together."""

    def __init__(self, instances: Sequence[Instance], mode: SplitMode = "convex") -> None:
        first = instances[0]
        self.instances = list(instances)
        self.mode = mode
        self.n, self.k, self.steps = first.n_users, first.n_servers, first.steps
        self.max_batch, self.transfer_s = first.max_batch, first.transfer_s
        for inst in instances:
            same = (inst.n_users, inst.n_servers, inst.max_batch, inst.transfer_s) == (
                self.n,
                self.k,
                self.max_batch,
                self.transfer_s,
            )
            if not same or not np.array_equal(inst.accuracy, first.accuracy):
                raise ValueError("instances placed together must share their size and constants")
        self.b = len(instances)
        self.acc = first.accuracy.astype(np.float64)
        self.grid = np.arange(1, self.steps + 1, dtype=np.float64)
        # Accuracy by split 1..T for batches of one (own adapter) and of more (shared base model).
        self.acc_single = np.full(self.steps, self.acc[0])
        self.choices = split_choices(self.steps) if mode == "chosen" else np.zeros(1, dtype=np.int64)
        self.lam = np.stack([i.latency_weight for i in instances])  # (B, N)
        self.speed = np.stack([i.device_speed for i in instances])
        self.availability = np.stack([i.availability for i in instances])  # (B, K)
        self.step_time = np.stack([i.step_times() for i in instances])  # (B, K, max_batch + 1)
        self.adapter_time = np.stack([i.adapter_times() for i in instances])[..., None]  # (B, K, 1)
        self.order = np.stack([placement_order(i.latency_weight) for i in instances])  # (B, N)
        self._env_index = np.arange(self.b)[:, None, None]
        self._server_index = np.arange(self.k)[None, :, None]
        self.local_utility = self.acc[0] - self.lam * self.steps / self.speed
        self.offload_const = self.lam * (self.transfer_s + self.steps / self.speed)
        self._context = self._context_table()
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.reset()

    def _context_table(self) -> np.ndarray:
        """(B, N, 8): the context features of the t-th user placed, for every t (they do not depend on
        the placements)."""
        n, k = self.n, self.k
        lam = np.take_along_axis(self.lam, self.order, axis=1)
        speed = np.take_along_axis(self.speed, self.order, axis=1)
        local = np.take_along_axis(self.local_utility, self.order, axis=1)
        remaining = np.broadcast_to(n - np.arange(n) - 1.0, lam.shape)
        rest_lam = np.cumsum(lam[:, ::-1], axis=1)[:, ::-1] - lam  # lambda mass placed after t
        columns = [
            lam / LAMBDA_SCALE,
            np.log(speed),
            local,
            remaining / n,
            remaining / (k * self.max_batch),
            rest_lam / (k * LAMBDA_SCALE),
            np.full(lam.shape, np.log(n) / 4.0),
            np.full(lam.shape, np.log(k) / 2.0),
        ]
        return np.stack(columns, axis=-1).astype(np.float32)

    def _layout(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per candidate for a join width: the kind one-hot (C, 3), whether it places on a server,
        and its server (K for local), which the per-server features gather by."""
        if width not in self._layouts:
            k, j = self.k, len(self.choices)
            kind = np.array([0] + [1] * (k * j) + [2] * (k * width))
            server = np.concatenate([[k], np.repeat(np.arange(k), j), np.repeat(np.arange(k), width)])
            self._layouts[width] = (np.eye(3, dtype=np.float32)[kind], kind > 0, server)
        return self._layouts[width]

    # ----- state -----

    def reset(self) -> None:
        shape = (self.b, self.k, self.n)
        self.t = 0
        self.size = np.zeros(shape, dtype=np.int64)
        self.lam_sum = np.zeros(shape)
        self.saving = np.zeros(shape)  # sum of lambda_i / v_i: utility per step moved off the devices
        self.fixed_split = np.zeros(shape, dtype=np.int64)
        self.n_batches = np.zeros((self.b, self.k), dtype=np.int64)
        self.server_of = np.full((self.b, self.n), -2, dtype=np.int64)  # -2 unplaced, -1 local
        self.batch_of = np.full((self.b, self.n), -1, dtype=np.int64)
        self.outside = np.zeros(self.b)  # local utilities minus offloaded constants, placed users
        self.split = np.zeros(shape, dtype=np.int64)
        self.total = np.zeros(self.b)
        self.width = 0
        self._refresh()

    @property
    def done(self) -> bool:
        return self.t >= self.n

    def current_user(self) -> np.ndarray:
        return self.order[:, self.t]

    def _times(self, size: np.ndarray) -> np.ndarray:
        """Step time of batches of `size` (..., B, K, M) on their servers."""
        return self.step_time[self._env_index, self._server_index, np.minimum(size, self.max_batch)]

    def _value(
        self, size: np.ndarray, saving: np.ndarray, behind: np.ndarray, times: np.ndarray, split: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Utility part n acc(s) - s c of batches, c = t Lambda_{>=m} - saving, and their split: the
        best split in "convex" mode, the batch's own `split` in "chosen" mode."""
        cost = times * behind - saving
        # A batch of one loads its member's adapter first: a delay to everyone from it on, whatever s.
        adapter = (size == 1) * self.adapter_time * behind
        if self.mode == "chosen":
            s = np.broadcast_to(np.maximum(split, 1), np.shape(size))
            acc = np.where(size == 1, self.acc[0], self.acc[s])
            return size * acc - s * cost - adapter, s
        values = size[..., None] * self.acc[1:] - self.grid * cost[..., None]
        values += (size == 1)[..., None] * (self.acc_single - self.acc[1:])
        return values.max(axis=-1) - adapter, values.argmax(axis=-1) + 1

    def _behind(self) -> np.ndarray:
        """Lambda mass of each batch and all batches queued after it on its server."""
        return np.cumsum(self.lam_sum[..., ::-1], axis=2)[..., ::-1]

    def _refresh(self) -> None:
        """Recompute every batch's value and split, and the total; keep what `observe` reuses."""
        exists = self.size > 0
        self.behind = self._behind()
        self.times = self._times(self.size)
        values, split = self._value(self.size, self.saving, self.behind, self.times, self.fixed_split)
        self.split = np.where(exists, split, 0)
        self.value = np.where(exists, values, 0.0)
        self.total = self.outside + self.value.sum(axis=(1, 2))
        busy = self.split * self.times + (self.size == 1) * self.adapter_time
        self.server_busy = np.where(exists, busy, 0.0).sum(axis=2)

    # ----- candidates -----

    def observe(self) -> Candidates:
        """The current user's candidates in every instance (call before `step`)."""
        rows = np.arange(self.b)
        user = self.current_user()
        lam, speed = self.lam[rows, user], self.speed[rows, user]
        lam3, saving3 = lam[:, None, None], (lam / speed)[:, None, None]
        steps = self.steps
        self.width = w = int(self.n_batches.max())
        size, saving = self.size[..., :w], self.saving[..., :w]
        behind = self.behind[..., :w]
        exists = size > 0
        times = self.times[..., :w]
        fixed = self.fixed_split[..., :w]
        old_value = self.value[..., :w]
        # Every batch ahead of the placement gets lambda more mass behind it; the joined batch also
        # grows by one. Both are evaluated in one call, stacked on a leading axis.
        joined = size + 1
        join_times = self._times(joined)
        both_value, both_split = self._value(
            np.stack([size, joined]),
            np.stack([saving, saving + saving3]),
            behind + lam3,
            np.stack([times, join_times]),
            fixed,
        )
        ahead_value, join_value = both_value
        ahead_split, join_split = both_split
        ahead_gain = np.where(exists, ahead_value - old_value, 0.0)
        ahead_edge = np.where(exists, ahead_split * times + (size == 1) * self.adapter_time, 0.0)
        gain_before = np.cumsum(ahead_gain, axis=2) - ahead_gain
        edge_before = np.cumsum(ahead_edge, axis=2) - ahead_edge
        const = self.offload_const[rows, user]

        # Join batch m of server k.
        join_delta = gain_before + join_value - old_value - const[:, None, None]
        join_latency = (
            edge_before
            + join_split * join_times
            + self.transfer_s
            + (steps - join_split) / speed[:, None, None]
        )
        join_acc = self.acc[join_split]
        join_valid = exists & (size < self.max_batch)

        # Open a new batch at the end of server k (one candidate per split choice).
        gain_all = ahead_gain.sum(axis=2)[..., None]  # (B, K, 1)
        edge_all = ahead_edge.sum(axis=2)[..., None]
        # A new batch is a batch of one: a0 - s c - adapter time x lambda, with c = lambda (t(1) - 1/v),
        # best at s = T when c < 0 (always, as an edge step beats a device step) and at s = 1 otherwise.
        new_times = self.step_time[:, :, 1:2]
        cost = new_times * lam3 - saving3
        if self.mode == "chosen":
            new_split = np.broadcast_to(self.choices, (self.b, self.k, len(self.choices)))
        else:
            new_split = np.where(cost < 0, steps, 1)
        new_value = self.acc[0] - new_split * cost - self.adapter_time * lam3
        new_delta = gain_all + new_value - const[:, None, None]
        new_latency = (
            edge_all
            + self.adapter_time
            + new_split * new_times
            + self.transfer_s
            + (steps - new_split) / speed[:, None, None]
        )

        local_latency = (steps / speed)[:, None]
        local_delta = self.local_utility[rows, user][:, None]

        def flat(x: np.ndarray) -> np.ndarray:
            return x.reshape(self.b, -1)

        delta = np.concatenate([local_delta, flat(new_delta), flat(join_delta)], axis=1)
        latency = np.concatenate([local_latency, flat(new_latency), flat(join_latency)], axis=1)
        join = slice(1 + new_delta[0].size, None)
        accuracy = np.full(delta.shape, self.acc[0])  # local and new batches keep the personal model
        accuracy[:, join] = flat(join_acc)
        own = accuracy - lam[:, None] * latency
        valid = np.ones(delta.shape, dtype=bool)
        valid[:, join] = flat(join_valid)
        features = self._features(
            delta, own, latency, accuracy, valid, new_split, join_split, joined, behind, w
        )
        return Candidates(features, valid, delta, own)

    def _features(
        self,
        delta: np.ndarray,
        own: np.ndarray,
        latency: np.ndarray,
        accuracy: np.ndarray,
        valid: np.ndarray,
        new_split: np.ndarray,
        join_split: np.ndarray,
        joined: np.ndarray,
        behind: np.ndarray,
        width: int,
    ) -> np.ndarray:
        """(B, C, F) float32 in `FEATURES` order; the context columns come from `_context_table`."""
        b, k, j, n = self.b, self.k, len(self.choices), self.n
        c = delta.shape[1]
        onehot, placed, server = self._layout(width)
        new, join = slice(1, 1 + k * j), slice(1 + k * j, None)
        out = np.zeros((b, c, N_FEATURES), dtype=np.float32)
        lam_scale = n * LAMBDA_SCALE
        out[..., 0:3] = onehot
        out[..., 3] = delta
        out[..., 4] = delta - np.max(np.where(valid, delta, -np.inf), axis=1, keepdims=True)
        out[..., 5] = own
        out[..., 6] = latency / LATENCY_SCALE_S
        out[..., 7] = accuracy
        out[:, new, 8] = new_split.reshape(b, -1) / self.steps
        out[:, join, 8] = join_split.reshape(b, -1) / self.steps
        out[:, new, 9] = 1 / self.max_batch
        out[:, join, 9] = joined.reshape(b, -1) / self.max_batch
        out[..., 10] = np.where(placed, 1.0 - out[..., 9], 0.0)
        n_behind = np.maximum(self.n_batches[..., None] - np.arange(width) - 1, 0)  # (B, K, W)
        out[:, join, 11] = n_behind.reshape(b, -1) / n
        out[:, join, 12] = (behind - self.lam_sum[..., :width]).reshape(b, -1) / lam_scale
        # Per-server facts, gathered by each candidate's server (row K, zeros, for local).
        stats = np.zeros((b, k + 1, 3))
        stats[:, :k, 0] = self.availability
        stats[:, :k, 1] = self.server_busy / LATENCY_SCALE_S
        stats[:, :k, 2] = self.lam_sum.sum(axis=2) / lam_scale
        out[..., 13:16] = stats[:, server]
        out[..., 16:] = self._context[:, self.t, None, :]
        return out

    # ----- transitions -----

    def step(self, actions: np.ndarray) -> np.ndarray:
        """Place the current user of each instance by candidate index; returns the rewards."""
        rows = np.arange(self.b)
        user = self.current_user()
        lam, speed = self.lam[rows, user], self.speed[rows, user]
        k, j, w = self.k, len(self.choices), max(self.width, 1)
        actions = np.asarray(actions, dtype=np.int64)
        if actions.min() < 0 or actions.max() >= 1 + k * j + k * self.width:
            raise ValueError("action outside the candidates of the last observation")
        join_index = actions - 1 - k * j  # server * width + slot for a join
        is_local = actions == 0
        is_join = join_index >= 0
        is_new = ~is_local & ~is_join
        server = np.maximum(np.where(is_join, join_index // w, (actions - 1) // j), 0)
        slot = np.where(is_join, join_index % w, self.n_batches[rows, server])
        if is_join.any():
            full = (slot >= self.n_batches[rows, server]) | (self.size[rows, server, slot] >= self.max_batch)
            if np.any(is_join & full):
                raise ValueError("joined a batch that does not exist or is full")
        off = ~is_local
        r, s, m = rows[off], server[off], slot[off]
        self.size[r, s, m] += 1
        self.lam_sum[r, s, m] += lam[off]
        self.saving[r, s, m] += lam[off] / speed[off]
        new_rows = is_new[off]
        self.fixed_split[r[new_rows], s[new_rows], m[new_rows]] = self.choices[(actions[is_new] - 1) % j]
        self.n_batches[rows[is_new], server[is_new]] += 1
        self.server_of[rows, user] = np.where(is_local, -1, server)
        self.batch_of[rows, user] = np.where(is_local, -1, slot)
        self.outside += np.where(is_local, self.local_utility[rows, user], -self.offload_const[rows, user])
        before = self.total
        self._refresh()
        self.t += 1
        return self.total - before

    def assignments(self) -> list[Assignment]:
        """The placements made so far, with the current splits."""
        result = []
        for e in range(self.b):
            counts = self.n_batches[e].tolist()
            members: list[list[list[int]]] = [[[] for _ in range(count)] for count in counts]
            local = []
            server_of, batch_of = self.server_of[e].tolist(), self.batch_of[e].tolist()
            for user in self.order[e, : self.t].tolist():  # placement order within a batch
                if server_of[user] == -1:
                    local.append(user)
                else:
                    members[server_of[user]][batch_of[user]].append(user)
            splits = self.split[e].tolist()
            servers = tuple(
                tuple(Batch(tuple(users), splits[k][m]) for m, users in enumerate(batches))
                for k, batches in enumerate(members)
            )
            result.append(Assignment(tuple(sorted(local)), servers))
        return result
