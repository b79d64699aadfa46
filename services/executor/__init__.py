"""The executor service: one process per GPU server, running the gang attempts the aggregator dispatches.

`core` holds the pure rules (dispatch checks, resident-model LRU, sim timings, result building),
`runners` the interchangeable ways of running an attempt (`SimRunner` now, a diffusers runner later),
`service` the bus wiring; its protobuf edge is in `services.common.convert`. Run it with
`python -m services.executor`.
"""
