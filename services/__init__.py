"""EAT Serve services: the command line, benchmarks, and (later) the message-driven services."""
