"""python -m services.aggregator"""

from __future__ import annotations

import torch

from policy_models.live import LiveScheduler, ModelCatalog, live_config
from policy_models.policies import make_policy
from policy_models.profiles import get_profile
from services.aggregator.core import AggregatorCore, CoreConfig, attempt_bound_s
from services.aggregator.journal import Journal
from services.aggregator.service import Aggregator
from services.aggregator.settings import AggregatorSettings
from services.common.bus import Bus
from services.common.runner import on_shutdown, start_service
from services.policy_server.client import PolicyClient


def build(settings: AggregatorSettings, bus: Bus) -> Aggregator:
    """The aggregator with its journal, fallback policy and policy client, wired to `bus`."""
    cfg = live_config(settings.nodes, settings.models, settings.models_per_server, profile=settings.profile)
    core = AggregatorCore(
        CoreConfig(
            nodes=settings.nodes,
            visible_queue=cfg.visible_queue,
            models_per_server=settings.models_per_server,
            time_scale=settings.time_scale,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            orphan_grace_s=settings.orphan_grace_s,
            no_capacity_after_s=settings.no_capacity_after_s,
            max_attempts=settings.max_attempts,
            busy_hold_s=settings.busy_hold_s,
            max_busy_refusals=settings.max_busy_refusals,
            rendezvous_port_base=settings.rendezvous_port_base,
            rendezvous_port_span=settings.rendezvous_port_span,
            episode_tasks=settings.episode_tasks,
            episode_time_s=settings.episode_time_s,
            reward=cfg.reward,
            min_steps=cfg.min_steps,
            max_steps=cfg.max_steps,
            max_attempt_s=attempt_bound_s(
                get_profile(settings.profile), cfg.max_steps, settings.attempt_bound_factor
            ),
        )
    )
    fallback = LiveScheduler(make_policy(settings.fallback_policy, cfg), cfg, ModelCatalog(settings.models))
    policy = (
        PolicyClient(settings.policy_target, settings.decide_timeout_s) if settings.policy_target else None
    )
    journal = Journal(settings.state_dir / "aggregator.sqlite3")
    return Aggregator(
        core,
        bus,
        journal,
        fallback,
        policy,
        recheck_wall_s=max(settings.recheck_s / settings.time_scale, settings.min_recheck_wall_s),
        starvation_s=settings.starvation_s,
        rendezvous_timeout_s=settings.rendezvous_timeout_s,
    )


def main() -> None:
    torch.set_num_threads(1)
    settings = AggregatorSettings.from_env()
    log = start_service("aggregator", settings)
    bus = Bus(settings.amqp_url, reconnect_max_s=settings.reconnect_max_s)
    aggregator = build(settings, bus)
    on_shutdown(bus.stop)
    log.info("starting", policy_target=settings.policy_target, fallback=settings.fallback_policy)
    bus.run()
    aggregator.journal.close()
    log.info("stopped")


if __name__ == "__main__":
    main()
