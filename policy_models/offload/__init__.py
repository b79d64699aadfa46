"""Multi-user offloading of personalised diffusion models: the model, its exact split solver and
optimum, a batched placement process, a learned placement policy and its baselines.

The model (the plain statement; `model.py` is its code, `model.score` the reference scoring)
----------------------------------------------------------------------------------------------

One round: N users arrive together, each with a request of T denoising steps and a personal model
(the shared base model plus the user's adapter). K edge servers hold the base model.

- Split. A request split at s runs steps [0, s) on an edge server and steps [s, T) on the user's
  device with the personal model. s = 0 is local (all on the device). An offloaded request has s in
  1..T.
- Accuracy a(s), s = 0..T, is fitted to a measured curve (`split_curve.json`: points of split, CLIP
  score and personalisation score; accuracy = clip x personal) as the least-squares concave,
  non-increasing function, clipped to [0, 1] (`model.fit_accuracy_curve` says why piecewise linear).
- Batches. A server runs batches one after another in its assigned order. A batch of b users shares
  the base model and steps in lockstep, with one split per batch: all members leave the edge after
  s_m steps. (Per-member splits would make a member's latency depend on min(s_i, s_j) of its
  batch-mates, which is not concave; with one split per batch the problem is a concave programme once
  the placement is fixed. What makes placement hard, the quadratic term of the underlying generalised
  quadratic assignment problem, is exactly batch-mates sharing a split and delaying each other and
  everyone queued behind them.) At most `max_batch` (8) users per batch.
- A batch of one runs its member's own adapter on the edge, so its accuracy is a(0) at any split; the
  server first spends adapter_load_s / availability_k (default 1 s at full availability) loading it.
  This is how all-edge serves everyone (batches of one, s = T, accuracy a(0)), and why it stops paying
  once a server holds more than a few users.
- Edge timing. A step of a batch of b on server k takes
  t_k(b) = edge_step_s / availability_k * (1 + beta (b - 1)); beta in [0, 1] is fitted to a measured
  batch-speedup table (speedup(b) = b t(1) / t(b)), 0.35 until measured; availability_k in [0.3, 1] is
  drawn per instance (resources fluctuate).
- Devices run v_i steps/s (log-uniform 0.4-4: 5x-50x slower than an edge step at batch 1). An
  offloaded request pays transfer_s (0.05 s) to move its latent.
- Latency of user i in batch m of server k:
  L_i = sum_{m' <= m on k} (s_m' t_k(b_m') + [b_m' = 1] adapter time) + transfer_s + (T - s_m) / v_i;
  local: L_i = T / v_i.
- Utility U_i = a_i - lambda_i L_i, lambda_i (accuracy per second of latency) being the user's
  preference, drawn as a(0) x (log-uniform 0.01-0.2): a second costs 1%-20% of the best accuracy.
  Reported per user: mean utility, latency and accuracy.

The exact splits. For a fixed placement the total utility is, per server,
sum_m [n_m acc_m(s_m) - s_m c_m] + constants, c_m = t_k(b_m) Lambda_{>=m} - sum_{i in m} lambda_i / v_i
(Lambda_{>=m}: the lambda mass of batch m and all batches behind it on the server): the batches'
splits do not interact, and each maximises a concave function of one integer, solved exactly by
evaluating all T splits (`model.solve_splits`, vectorised in `env.OffloadEnvs`).

The decision process (`env.py`). Users are placed one at a time, latency weight first, each to local,
a new batch at the end of a server's queue or an existing non-full batch; the reward is the increase
of the exact-split total utility, so the return is the round's total.

Policies (`policies.py`): drl-convex, pure-drl, all-edge, all-local, fixed-third, greedy,
greedy-social, optimal (`optimal.py`, exact by dynamic programming over user subsets). Training:
`train.py`; evaluation: `evaluate.py`; shipped weights: `weights/`.
"""
