"""The decision latency helper."""

from __future__ import annotations

from policy_models.nets import decision_latency_ms
from tests.policy_models.nets.helpers import attention_encoder, per_task_actor, random_obs


def test_decision_latency_is_measured_and_modes_restored() -> None:
    encoder, actor = attention_encoder(), per_task_actor()
    obs = {key: value.numpy() for key, value in random_obs(1, 4, 10).items()}
    latency = decision_latency_ms(actor, encoder, obs, repeats=3)
    assert latency > 0
    assert encoder.training and actor.training
