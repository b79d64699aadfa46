"""`python -m services.executor`: one executor process, configured by EAT_* variables."""

from __future__ import annotations

import os

from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings


def main() -> None:
    # NCCL's default on a lost peer tears the whole process down (and every warm model with it); with
    # 2 the failed collective raises instead, and the gang code reports the lost member. It must be set
    # before any NCCL group is formed.
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
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
        patch_mode=settings.patch_mode,
        time_scale=settings.time_scale,
        incarnation=service.core.incarnation,
    )
    bus.run()
    service.runner.close()
    log.info("executor stopped", executor_id=settings.executor_id)


if __name__ == "__main__":
    main()
