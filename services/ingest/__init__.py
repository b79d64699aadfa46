"""Ingest: validates task submissions and admits them (python -m services.ingest)."""
