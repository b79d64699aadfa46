"""The policy server: scheduling decisions over gRPC (`eat.v1.PolicyService`) from a policy running in
process, hot-swapped when the trainer promotes a new checkpoint (`eat.policy.updates`).

`python -m services.policy_server` runs it; `client.PolicyClient` is the synchronous client the
aggregator uses; `server.start_in_thread` starts a real server inside a test.
"""
