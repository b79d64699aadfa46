"""Prometheus metrics of the evaluator (served by the common /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# kind: simulated (passed through), scored (CLIP) or error (the report says why it has no score)
REPORTS = Counter("eat_evaluator_reports_total", "Quality reports published", ["kind"])
IGNORED = Counter("eat_evaluator_ignored_total", "Failed results acked without a report")
BATCH_SIZE = Histogram(
    "eat_evaluator_batch_size", "Real images scored per batch", buckets=(1, 2, 4, 8, 16, 32, 64)
)
EVAL_SECONDS = Histogram(
    "eat_evaluator_eval_seconds",
    "Seconds to load and score one real image (its share of the batch)",
    buckets=(1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0),
)
