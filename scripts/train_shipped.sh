#!/usr/bin/env bash
# How the EAT policies in policy_models/checkpoints/ were trained and shipped (docs/learning.md).
# Each run is one process on one CPU thread with a wall-clock limit; two run side by side on a 2-core
# machine. Usage: scripts/train_shipped.sh [n4|n8|n12|cross|warm|ship]...
set -euo pipefail
cd "$(dirname "$0")/.."
EAT="${EAT:-.venv/bin/eat}"
export OMP_NUM_THREADS=1
MINUTES="${MINUTES:-18}"
# The shipped EAT: cpu-fast networks with the paper's 10 denoising steps, every paper arrival rate of
# the node count(s) as its own cluster config. Hinted and residual (docs/learning.md, learning.hints):
# the network reads the reuse heuristic's action and outputs a correction to it, starting at none. The
# heuristic also teaches: its noisy actions fill the warm-up, 3000 imitation updates, then SAC with a
# behaviour-cloning term towards it (weight 0.3 x mean |Q|, no Q-filter). Best of 10 validation seeds.
RECIPE=(--algo eat --preset cpu-fast --diffusion-steps 10 --paper-rates --teacher reuse --hint reuse
        --residual --no-q-filter --bc-weight 0.3 --pretrain-updates 3000 --warmup 20000 --steps 2000000
        --minutes "$MINUTES" --eval-every 8192 --eval-seeds 10 --checkpoint-every 100000 --seed 0
        --no-progress)
# Session 8's EAT (the "eat-plain" row): the paper's input, 25 minutes, Q-filtered imitation term.
PLAIN=(--algo eat --preset cpu-fast --diffusion-steps 10 --paper-rates --teacher reuse --bc-weight 1.0
       --warmup 20000 --steps 2000000 --minutes 25 --eval-every 16384 --checkpoint-every 100000
       --seed 0 --no-progress)

train() {  # name, then the cluster arguments
  local name=$1; shift
  "$EAT" train "${RECIPE[@]}" "$@" --out "runs/$name"
}

train_plain() {  # name, imitation updates, then the cluster arguments
  local name=$1 pretrain=$2; shift 2
  "$EAT" train "${PLAIN[@]}" --pretrain-updates "$pretrain" "$@" --out "runs/$name"
}

for what in "$@"; do
  case "$what" in
    n4) train eat-n4 --nodes 4 ;;
    n8) train eat-n8 --nodes 8 ;;
    n12) train eat-n12 --nodes 12 ;;
    cross) train eat-cross --nodes 4 8 12 ;;  # one policy for all three sizes (15 configs)
    warm) train eat-warm --mode warm --nodes 8 ;;  # shipped from a 15-minute run: MINUTES=15
    plain-n4) train_plain eat-plain-n4 5000 --nodes 4 ;;
    plain-n8) train_plain eat-plain-n8 8000 --nodes 8 ;;
    plain-n12) train_plain eat-plain-n12 8000 --nodes 12 ;;
    ship)
      "$EAT" ship runs/eat-n4 --name eat-n4 --row eat
      "$EAT" ship runs/eat-n8 --name eat-n8 --row eat
      "$EAT" ship runs/eat-n12 --name eat-n12 --row eat
      "$EAT" ship runs/eat-cross --name eat-cross --row eat-cross \
        --note "One policy for N = 4, 8 and 12 (round-robin over the three clusters)."
      "$EAT" ship runs/eat-warm --name eat-warm --row eat-warm --note "Warm mode (our executors)."
      ;;
    ship-plain)
      for n in 4 8 12; do
        "$EAT" ship "runs/eat-plain-n$n" --name "eat-plain-n$n" --row eat-plain \
          --note "The paper's input (no hint), for comparison with the hinted, residual EAT."
      done
      ;;
    *) echo "unknown step $what (n4 n8 n12 cross warm ship plain-n4 plain-n8 plain-n12 ship-plain)" >&2
       exit 2 ;;
  esac
done
