"""Prometheus metrics of the executor (served by the common /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "eat_executor_attempts_total", "Attempts this executor finished or refused", ["outcome", "reason"]
)
BUSY = Gauge("eat_executor_busy", "1 while this executor runs an attempt")
MODEL_LOADS = Counter("eat_executor_model_loads_total", "Attempts that loaded their model cold")
ATTEMPT_SECONDS = Histogram(
    "eat_executor_attempt_seconds",
    "Duration of successful attempts in simulated seconds (init + group setup + denoise)",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300),
)
