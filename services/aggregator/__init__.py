"""Aggregator: the task queue, the cluster state and the decision loop (python -m services.aggregator)."""
