"""The evaluator service: turns TaskResults into QualityReports (CLIP score of image and prompt).

`clip_scorer` wraps an open_clip model, `core` holds the pure rules (routing, image loading, batch
evaluation) and `service` the bus wiring with batching; its protobuf edge is in `services.common.convert`.
Run it with `python -m services.evaluator`.
"""
