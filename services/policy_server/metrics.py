"""The policy server's own Prometheus metrics (the default registry, served on EAT_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter("eat_policy_decisions_total", "Decide calls answered", ["policy", "execute"])
DECIDE_SECONDS = Histogram(
    "eat_policy_decide_seconds",
    "Server-side time of one Decide, from receipt to reply",
    buckets=(1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5),
)
INVALID_REQUESTS = Counter("eat_policy_invalid_requests_total", "Decide calls refused as INVALID_ARGUMENT")
VERSION = Gauge("eat_policy_version", "Version of the serving policy (0 = not learned)")
UPDATES_APPLIED = Counter("eat_policy_updates_applied_total", "Policy updates hot-swapped in")
UPDATES_REFUSED = Counter(
    "eat_policy_updates_refused_total", "Policy updates refused", ["reason"]
)  # reason: obs_spec, stale, checkpoint, malformed
OFFLOAD_ROUNDS = Counter("eat_policy_offload_rounds_total", "DecideOffload rounds answered", ["policy"])
OFFLOAD_SECONDS = Histogram(
    "eat_policy_offload_decide_seconds",
    "Server-side time of one DecideOffload, from receipt to reply",
    buckets=(1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 5.0),
)
OFFLOAD_INVALID_REQUESTS = Counter(
    "eat_policy_offload_invalid_requests_total", "DecideOffload calls refused as INVALID_ARGUMENT"
)
UNAUTHENTICATED = Counter(
    "eat_policy_unauthenticated_total", "Calls refused as UNAUTHENTICATED (no token or a wrong one)"
)
