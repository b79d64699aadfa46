"""The trainer's Prometheus metrics (names start with eat_trainer_; the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSITIONS = Counter(
    "eat_trainer_transitions_total", "Experience messages received, by outcome", ["outcome"]
)  # outcome: stored, duplicate, rejected
UPDATES = Counter("eat_trainer_updates_total", "SAC updates made")
EVALUATIONS = Counter("eat_trainer_evaluations_total", "Candidate evaluations finished")
PROMOTIONS = Counter("eat_trainer_promotions_total", "Candidates promoted to a new policy version")
BUFFER_SIZE = Gauge("eat_trainer_buffer_size", "Transitions in the replay buffer")
UPDATES_OWED = Gauge("eat_trainer_updates_owed", "SAC updates owed and not yet made")
CANDIDATE_UTILITY = Gauge("eat_trainer_candidate_utility", "Mean utility of the last evaluated candidate")
SERVING_UTILITY = Gauge("eat_trainer_serving_utility", "Mean utility of the serving policy, last evaluation")
SERVING_VERSION = Gauge("eat_trainer_serving_version", "Policy version the trainer compares against")
EVALUATION_SECONDS = Histogram(
    "eat_trainer_evaluation_seconds",
    "Wall time of one candidate evaluation",
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0),
)
