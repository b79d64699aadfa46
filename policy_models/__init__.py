"""The pure core of EAT Serve: domain model, simulator, observation and reward, policies.

Nothing in this package does I/O beyond reading and writing checkpoint files it is handed.
"""
