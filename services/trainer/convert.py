"""The trainer's protobuf edge: Experience in, PolicyUpdated out. Protobuf types stop here."""

from __future__ import annotations

from eat.v1 import learning_pb2
from services.common.convert import snapshot_from_proto, timestamp
from services.trainer.core import Promotion, Transition


def transition_from_proto(message: learning_pb2.Experience) -> Transition:
    """The domain transition of an Experience; ValueError when a snapshot is missing."""
    for name in ("observation", "next_observation"):
        if not message.HasField(name):
            raise ValueError(f"Experience without {name}")
    return Transition(
        episode_id=message.episode_id,
        step_index=message.step_index,
        observation=snapshot_from_proto(message.observation),
        action=tuple(message.action),
        reward=message.reward,
        next_observation=snapshot_from_proto(message.next_observation),
        done=message.done,
        truncated=message.truncated,
        obs_spec_version=message.obs_spec_version,
        policy_version=message.policy_version,
        source=message.source,
    )


def policy_updated(promotion: Promotion) -> learning_pb2.PolicyUpdated:
    result = promotion.evaluation
    return learning_pb2.PolicyUpdated(
        version=promotion.version,
        checkpoint_uri=str(promotion.directory),
        algorithm=promotion.algorithm,
        obs_spec_version=promotion.obs_spec_version,
        created_at=timestamp(promotion.created_at),
        evaluation=learning_pb2.EvaluationSummary(
            candidate_utility=result.candidate_utility,
            serving_utility=result.serving_utility,
            diff_ci95=result.diff_ci95,  # nan with a single seed: no interval
            serving_version=result.serving_version,
            episodes=result.episodes,
            seeds=result.seeds,
            settings=result.settings,
        ),
    )
