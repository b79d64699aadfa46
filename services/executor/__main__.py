"""`python -m services.executor`: one executor process, configured by EAT_* variables."""

from __future__ import annotations

from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings


def main() -> None:
    settings = ExecutorSettings.from_env()
    log = start_service("executor", settings)
    bus = Bus(settings.amqp_url, prefetch=16, reconnect_max_s=settings.reconnect_max_s)
    service = ExecutorService(settings, bus)
    service.start()
    on_shutdown(service.request_shutdown)
    log.info(
        "executor starting",
        executor_id=settings.executor_id,
        runner=settings.runner,
        device=settings.device,
        profile=settings.profile,
        models=list(settings.models),
        time_scale=settings.time_scale,
        incarnation=service.core.incarnation,
    )
    bus.run()
    service.runner.close()
    log.info("executor stopped", executor_id=settings.executor_id)


if __name__ == "__main__":
    main()
