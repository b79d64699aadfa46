"""`python -m services.trainer`: learn from live Experience and promote policies until SIGTERM/SIGINT.

Reads TrainerSettings from EAT_* variables (EAT_NODES, EAT_POLICY_DIR, EAT_STATE_DIR, ...). Exit
status 2 when the settings are invalid, 1 when the saved state or the initial checkpoint cannot be
loaded. On SIGTERM/SIGINT the bus loop stops, the state is saved, and the process exits 0.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from policy_models.checkpoints import CheckpointError
from policy_models.live import live_config
from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.common.settings import SettingsError, env_name
from services.trainer.core import (
    OnlineTrainer,
    TrainerConfig,
    checkpoint_agent_config,
    online_agent_config,
    preset_agent_config,
)
from services.trainer.service import TrainerService
from services.trainer.settings import TrainerSettings


def trainer_config(settings: TrainerSettings) -> TrainerConfig:
    """The core's config: the live cluster's shapes, the warm-mode promotion setting and the agent
    (the preset's, or the initial checkpoint's networks)."""
    cluster = dict(models_per_server=settings.models_per_server, profile=settings.profile)
    init = Path(settings.init_checkpoint) if settings.init_checkpoint else None
    base = checkpoint_agent_config(init) if init else preset_agent_config(settings.preset, settings.algorithm)
    if base.algorithm != settings.algorithm:
        raise SettingsError(
            f"{env_name('init_checkpoint')} holds a {base.algorithm} agent, "
            f"{env_name('algorithm')} is {settings.algorithm}"
        )
    return TrainerConfig(
        sim=live_config(settings.nodes, settings.models, **cluster),
        eval_sim=live_config(settings.nodes, settings.models, arrival_rate=settings.eval_rate, **cluster),
        models=settings.models,
        agent=online_agent_config(base, settings.batch_size, settings.buffer_capacity),
        policy_dir=settings.policy_dir,
        serving_policy=settings.serving_policy,
        warmup_transitions=settings.warmup_transitions,
        updates_per_transition=settings.updates_per_transition,
        evaluate_every_updates=settings.evaluate_every_updates,
        eval_seeds=settings.validation_seeds,
        min_improvement=settings.min_improvement,
        seed=settings.seed,
        init_checkpoint=init,
    )


def main() -> int:
    torch.set_num_threads(1)  # small shared machines: one thread does the updates
    try:
        settings = TrainerSettings.from_env()
    except SettingsError as err:
        print(f"trainer: {err}", file=sys.stderr)
        return 2
    log = start_service("trainer", settings)
    if settings.nice:
        os.nice(settings.nice)
    try:
        trainer = OnlineTrainer.start(trainer_config(settings), settings.state_dir)
    except (CheckpointError, OSError, ValueError) as err:  # SettingsError is a ValueError
        log.error("cannot start the trainer", error=str(err))
        return 1
    bus = Bus(settings.amqp_url, reconnect_max_s=settings.reconnect_max_s)
    service = TrainerService(
        trainer,
        bus,
        settings.state_dir,
        save_every_s=settings.save_every_s,
        update_share=settings.update_share,
    )
    on_shutdown(bus.stop)
    log.info(
        "starting",
        algorithm=trainer.agent.config.algorithm,
        transitions=len(trainer.buffer),
        updates=trainer.counters.updates,
        serving_version=trainer.serving.version,
        serving_policy=trainer.serving.policy,
    )
    try:
        bus.run()
    finally:
        service.close()
    log.info("stopped", transitions=len(trainer.buffer), updates=trainer.counters.updates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
