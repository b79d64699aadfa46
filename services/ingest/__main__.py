"""python -m services.ingest"""

from __future__ import annotations

from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.ingest.service import Ingest
from services.ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings.from_env()
    log = start_service("ingest", settings)
    bus = Bus(settings.amqp_url, reconnect_max_s=settings.reconnect_max_s)
    Ingest(settings, bus)
    on_shutdown(bus.stop)
    log.info("starting", models=settings.models)
    bus.run()
    log.info("stopped")


if __name__ == "__main__":
    main()
