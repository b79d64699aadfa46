#!/usr/bin/env bash
# How the EAT policies in policy_models/checkpoints/ were trained and shipped (docs/learning.md).
# Each run is one process on one CPU thread with a wall-clock limit; two run side by side on a 2-core
# machine. Usage: scripts/train_shipped.sh [n4|n8|n12|cross|warm|ship]...
set -euo pipefail
cd "$(dirname "$0")/.."
EAT="${EAT:-.venv/bin/eat}"
export OMP_NUM_THREADS=1
MINUTES="${MINUTES:-25}"
# cpu-fast networks with the paper's 10 denoising steps, every paper arrival rate of the node count(s)
# as its own cluster config; the reuse heuristic as teacher: its noisy actions fill the warm-up, then
# imitation updates (5000 at N=4, 8000 elsewhere), then SAC with a Q-filtered imitation term.
RECIPE=(--algo eat --preset cpu-fast --diffusion-steps 10 --paper-rates --teacher reuse --bc-weight 1.0
        --warmup 20000 --steps 2000000 --minutes "$MINUTES" --eval-every 16384 --checkpoint-every 100000
        --seed 0 --no-progress)

train() {  # name, imitation updates, then the cluster arguments
  local name=$1 pretrain=$2; shift 2
  "$EAT" train "${RECIPE[@]}" --pretrain-updates "$pretrain" "$@" --out "runs/$name"
}

for what in "$@"; do
  case "$what" in
    n4) train eat-n4 5000 --nodes 4 ;;
    n8) train eat-n8 8000 --nodes 8 ;;
    n12) train eat-n12 8000 --nodes 12 ;;
    cross) train eat-cross 8000 --nodes 4 8 12 ;;  # one policy for all three sizes (15 configs)
    warm) train eat-warm 8000 --mode warm --nodes 8 ;;
    ship)
      "$EAT" ship runs/eat-n4 --name eat-n4 --row eat
      "$EAT" ship runs/eat-n8 --name eat-n8 --row eat
      "$EAT" ship runs/eat-n12 --name eat-n12 --row eat
      "$EAT" ship runs/eat-cross --name eat-cross --row eat-cross \
        --note "One policy for N = 4, 8 and 12 (round-robin over the three clusters)."
      "$EAT" ship runs/eat-warm --name eat-warm --row eat-warm --note "Warm mode (our executors)."
      ;;
    *) echo "unknown step $what (n4 n8 n12 cross warm ship)" >&2; exit 2 ;;
  esac
done
