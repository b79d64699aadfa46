"""`python -m services.offload`: the offload coordinator, configured by EAT_* variables."""

from __future__ import annotations

from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.offload.service import OffloadService
from services.offload.settings import OffloadSettings
from services.policy_server.client import PolicyClient


def main() -> None:
    settings = OffloadSettings.from_env()
    log = start_service("offload", settings)
    client = PolicyClient(settings.policy_target, settings.policy_timeout_s)
    bus = Bus(settings.amqp_url, prefetch=max(256, 4 * settings.round_size))
    service = OffloadService(settings, bus, lambda r, rid: client.decide_offload(r, rid))
    service.start()
    on_shutdown(bus.stop)
    log.info(
        "offload coordinator ready", edge_servers=list(settings.edge_servers), policy=settings.policy_target
    )
    bus.run()
    service.close()
    client.close()
    log.info("offload coordinator stopped")


if __name__ == "__main__":
    main()
