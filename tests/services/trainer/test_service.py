"""The trainer's shell without a broker: an experience it refuses is rejected with its reason (the bus
dead-letters it) and never reaches the replay buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common.bus import Delivery, Reject
from services.common.topology import TRAINER_EXPERIENCE
from services.trainer.core import OnlineTrainer
from services.trainer.service import TrainerService
from tests.services.trainer.builders import experience, random_transition, tiny_config


class IdleBus:
    def consume(self, queue: Any, handler: Any) -> None:
        pass

    def every(self, period_s: float, fn: Any) -> None:
        pass


@pytest.mark.parametrize("reward", [1e30, -1e30, float("inf")])
def test_an_absurd_reward_is_rejected_with_its_reason(tmp_path: Path, reward: float) -> None:
    trainer = OnlineTrainer.start(tiny_config(tmp_path))
    service = TrainerService(trainer, IdleBus(), tmp_path / "state")  # type: ignore[arg-type]
    message = experience(random_transition(np.random.default_rng(0), reward=reward))
    body = message.SerializeToString()
    delivery = Delivery(TRAINER_EXPERIENCE.name, message.DESCRIPTOR.full_name, body, {}, False, "experience")
    with pytest.raises(Reject, match=r"outside|finite"):
        service.on_experience(delivery)
    assert len(trainer.buffer) == 0
