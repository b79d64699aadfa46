"""The trainer on the real RabbitMQ: Experience on eat.learning in, a PolicyUpdated out once a
candidate wins, malformed transitions to the dead letters, the state saved at shutdown.

The trainer consumes the shared eat.trainer.experience (purged first); the test listens on a private
queue bound to eat.learning (policy.updated) and to the dead-letter exchange.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from eat.v1 import learning_pb2
from policy_models.live import LiveScheduler, ModelCatalog
from policy_models.obs import OBS_SPEC_VERSION
from policy_models.policies import make_policy
from services.common import topology
from services.common.bus import Bus, Delivery
from services.trainer.core import OnlineTrainer
from services.trainer.service import TrainerService
from tests.services.rabbit import AMQP_URL, bus_thread, observer, purge_experience_queue, unique
from tests.services.trainer.builders import (
    MODELS,
    SIM,
    experience,
    random_snapshot,
    random_transition,
    tiny_config,
)

pytestmark = pytest.mark.broker
TRANSITIONS = 12  # warm-up 4, one update per transition, evaluation every 4 updates


def updates_in(seen: list[Delivery], policy_dir: Path) -> list[learning_pb2.PolicyUpdated]:
    name = learning_pb2.PolicyUpdated.DESCRIPTOR.full_name
    found = [d.parse(learning_pb2.PolicyUpdated) for d in seen if d.type_name == name]
    return [u for u in found if Path(u.checkpoint_uri).parent == policy_dir.resolve()]  # ours only


def dead_letters_of(seen: list[Delivery], episode_id: str) -> list[Delivery]:
    name = learning_pb2.Experience.DESCRIPTOR.full_name
    return [
        d
        for d in seen
        if d.type_name == name
        and topology.REASON_HEADER in d.headers
        and d.parse(learning_pb2.Experience).episode_id == episode_id
    ]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_experience_in_policy_updated_out(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, warmup_transitions=4, evaluate_every_updates=4, min_improvement=-1e9)
    state_dir = tmp_path / "state"
    episode = unique("test-episode")
    rng = np.random.default_rng(11)
    rejected_before = counter("eat_trainer_transitions_total", outcome="rejected")
    purge_experience_queue()

    with observer((topology.LEARNING.name, topology.POLICY_UPDATED_KEY), (topology.DLX.name, "#")) as obs:
        trainer = OnlineTrainer.start(config, state_dir)
        bus = Bus(AMQP_URL, queues=())
        service = TrainerService(trainer, bus, state_dir, save_every_s=3600.0)
        bus.connect()
        with bus_thread(bus):
            wrong_spec = random_transition(rng, episode, 999, obs_spec_version=OBS_SPEC_VERSION + 1)
            obs.bus.publish(topology.LEARNING.name, topology.EXPERIENCE_KEY, experience(wrong_spec))
            for step in range(TRANSITIONS):
                message = experience(random_transition(rng, episode, step))
                obs.bus.publish(topology.LEARNING.name, topology.EXPERIENCE_KEY, message)
            obs.wait_for(
                lambda seen: bool(updates_in(seen, config.policy_dir) and dead_letters_of(seen, episode)),
                timeout_s=60.0,
            )
        service.close()  # as __main__ does after the loop stops: save

    updates = updates_in(obs.seen, config.policy_dir)
    assert [u.version for u in updates] == list(range(1, len(updates) + 1))  # one message per version
    update = updates[0]
    assert update.version == 1 and update.algorithm == "eat" and update.obs_spec_version == OBS_SPEC_VERSION
    assert Path(update.checkpoint_uri).is_absolute() and Path(update.checkpoint_uri).name == "v000001"
    assert update.created_at.seconds > 0
    summary = update.evaluation
    assert list(summary.seeds) == [500, 501] and summary.episodes == 2 and summary.serving_version == 0
    assert math.isfinite(summary.candidate_utility) and math.isfinite(summary.serving_utility)
    assert "N=4" in summary.settings
    policy = make_policy(f"checkpoint:{update.checkpoint_uri}", SIM)
    decision = LiveScheduler(policy, SIM, ModelCatalog(MODELS)).decide(random_snapshot(rng))
    assert len(decision.action) == SIM.action_dim

    (dead,) = dead_letters_of(obs.seen, episode)
    assert "obs_spec_version" in dead.headers[topology.REASON_HEADER]
    assert dead.headers[topology.SOURCE_HEADER] == topology.TRAINER_EXPERIENCE.name
    assert counter("eat_trainer_transitions_total", outcome="rejected") >= rejected_before + 1

    # Every acked transition of ours is in the saved state; the wrong one is not.
    resumed = OnlineTrainer.start(config, state_dir)
    assert all((episode, step) in resumed.recent for step in range(TRANSITIONS))
    assert (episode, 999) not in resumed.recent
    assert len(resumed.buffer) >= TRANSITIONS and resumed.counters.updates >= 4
    assert resumed.serving.version >= 1 and resumed.unannounced() is None  # announced before the save
