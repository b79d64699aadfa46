#!/usr/bin/env bash
# How the learned baselines in policy_models/checkpoints/ were trained and shipped (docs/learning.md):
# EAT's ablations (EAT-A, EAT-D, EAT-DA), LAD-TS and PPO. The SAC family follows EAT's recipe
# (scripts/train_shipped.sh: cpu-fast networks, the reuse heuristic as teacher, then SAC with a
# Q-filtered imitation term) on a shorter budget; PPO is on-policy and learns from its own rollouts.
# Flat-encoder agents (eat-a, eat-da) are sized for one N, so they get one run per size; the
# attention agents get one run across N = 4, 8, 12. Each run is one process on one CPU thread.
# Usage: scripts/train_baselines.sh [eat-a|eat-da|eat-d|lad-ts|ppo|ship]...
set -euo pipefail
cd "$(dirname "$0")/.."
EAT="${EAT:-.venv/bin/eat}"
export OMP_NUM_THREADS=1
MINUTES="${MINUTES:-10}"              # per-size runs
CROSS_MINUTES="${CROSS_MINUTES:-14}"  # cross-size runs (15 cluster configs)
COMMON=(--paper-rates --eval-every 16384 --checkpoint-every 100000 --seed 0 --no-progress --steps 2000000)
SAC=(--preset cpu-fast --diffusion-steps 10 --teacher reuse --bc-weight 1.0 --warmup 20000)

sac() {  # algo, run name, minutes, imitation updates, then the cluster arguments
  local algo=$1 name=$2 minutes=$3 pretrain=$4; shift 4
  "$EAT" train --algo "$algo" "${SAC[@]}" "${COMMON[@]}" --minutes "$minutes" \
    --pretrain-updates "$pretrain" "$@" --out "runs/$name"
}

per_size() {  # algo
  sac "$1" "$1-n4" "$MINUTES" 5000 --nodes 4
  sac "$1" "$1-n8" "$MINUTES" 8000 --nodes 8
  sac "$1" "$1-n12" "$MINUTES" 8000 --nodes 12
}

for what in "$@"; do
  case "$what" in
    eat-a|eat-da) per_size "$what" ;;
    eat-d|lad-ts) sac "$what" "$what-cross" "$CROSS_MINUTES" 8000 --nodes 4 8 12 ;;
    ppo) "$EAT" train --algo ppo "${COMMON[@]}" --minutes "$CROSS_MINUTES" --nodes 4 8 12 --out runs/ppo-cross ;;
    ship)
      for algo in eat-a eat-da; do
        for n in 4 8 12; do "$EAT" ship "runs/$algo-n$n" --name "$algo-n$n" --row "$algo"; done
      done
      for algo in eat-d lad-ts ppo; do
        "$EAT" ship "runs/$algo-cross" --name "$algo" --row "$algo" \
          --note "One policy for N = 4, 8 and 12 (round-robin over the three clusters)."
      done
      ;;
    *) echo "unknown step $what (eat-a eat-da eat-d lad-ts ppo ship)" >&2; exit 2 ;;
  esac
done
