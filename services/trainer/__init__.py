"""The online trainer: learns a scheduler from live transitions and promotes it when it beats the
serving policy on the simulator.

    aggregator --Experience--> trainer --PolicyUpdated--> policy server (hot swap)

`core` is the pure trainer (replay buffer, SAC updates, evaluation, promotion), `state` its persistence,
`service` the bus shell and `__main__` the process; its protobuf edge is in `services.common.convert`.
"""
