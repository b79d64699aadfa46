"""`python -m services.edge`: an edge worker for personal requests, configured by EAT_* variables."""

from __future__ import annotations

import time

import torch

from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.edge.models import PersonalModels
from services.edge.service import EdgeService
from services.edge.settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings.from_env()
    log = start_service("edge", settings)
    torch.set_num_threads(settings.torch_threads)
    started = time.perf_counter()
    users = settings.adapter_users()
    models = PersonalModels(settings.pipeline_dir, settings.users_dir, users, settings.resolution)
    log.info("pipeline and adapters ready", users=list(users), load_s=round(time.perf_counter() - started, 2))
    # One batch at a time: the worker computes inside its handler, so more would only wait unacked.
    bus = Bus(settings.amqp_url, prefetch=1, reconnect_max_s=settings.reconnect_max_s)
    EdgeService(settings, bus, models).start()
    on_shutdown(bus.stop)
    bus.run()
    log.info("edge worker stopped")


if __name__ == "__main__":
    main()
