"""`python -m services.evaluator`: the CLIP evaluator, configured by EAT_* variables."""

from __future__ import annotations

import time

from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.evaluator.clip_scorer import ClipScorer
from services.evaluator.service import EvaluatorService
from services.evaluator.settings import EvaluatorSettings


def main() -> None:
    settings = EvaluatorSettings.from_env()
    log = start_service("evaluator", settings)
    started = time.perf_counter()
    scorer = ClipScorer.build(settings.clip_model, settings.clip_checkpoint, settings.device)
    log.info(
        "CLIP model ready",
        model=scorer.evaluator_model,
        checkpoint=str(settings.clip_checkpoint or ""),
        device=settings.device,
        load_s=round(time.perf_counter() - started, 2),
    )
    # Prefetch covers a full batch plus the window's arrivals; more would only sit unscored.
    bus = Bus(settings.amqp_url, prefetch=4 * settings.batch_size, reconnect_max_s=settings.reconnect_max_s)
    service = EvaluatorService(settings, bus, scorer)
    service.start()
    on_shutdown(service.request_shutdown)
    bus.run()
    log.info("evaluator stopped")


if __name__ == "__main__":
    main()
