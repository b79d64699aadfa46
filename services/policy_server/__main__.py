"""`python -m services.policy_server`: serve scheduling decisions over gRPC until SIGTERM/SIGINT.

Reads PolicySettings from EAT_* variables (EAT_POLICY, EAT_GRPC_PORT, EAT_NODES, ...). Exit status 2
when the settings are invalid or leave the port unprotected (no TLS material and no development
switch), 1 when the policy cannot be loaded or the port cannot be bound.
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from services.common.runner import on_shutdown, start_service
from services.common.settings import SettingsError
from services.policy_server.server import serve
from services.policy_server.settings import PolicySettings


async def run(settings: PolicySettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # The signal handler runs on this (the main) thread between loop iterations; hand the stop to the
    # loop properly so the graceful shutdown (NOT_SERVING, drain, stop the bus) runs on it.
    on_shutdown(lambda: loop.call_soon_threadsafe(stop.set))
    await serve(settings, stop=stop)


def main() -> int:
    try:
        settings = PolicySettings.from_env()
        settings.check_security()
    except SettingsError as err:
        print(f"policy_server: {err}", file=sys.stderr)
        return 2
    log: structlog.stdlib.BoundLogger = start_service("policy_server", settings)
    try:
        asyncio.run(run(settings))
    except Exception as err:
        log.exception("policy server failed", error=repr(err))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
