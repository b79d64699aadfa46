"""Edge batches the worker refuses, and latents on the wire."""

from __future__ import annotations

import numpy as np
import pytest

from eat.v1 import hybrid_pb2
from services.common.hybrid import BadLatent, EdgeBatch, Handoff, Member, handoff_from_proto, handoff_to_proto
from services.edge.core import batch_problems


def batch(**changes: object) -> EdgeBatch:
    base: dict[str, object] = dict(
        batch_id="b",
        server_id="edge-0",
        steps=6,
        split_step=3,
        members=(Member("t1", "ana", "p", 1), Member("t2", "ben", "p", 2)),
    )
    return EdgeBatch(**{**base, **changes})  # type: ignore[arg-type]


def test_a_base_batch_of_several_users_is_runnable() -> None:
    assert list(batch_problems(batch(), "edge-0", {"ana"})) == []


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"adapter_user": "ana"}, "exactly one member"),  # adapters are never mixed in a batch
        ({"adapter_user": "cai", "members": (Member("t1", "cai", "p", 1),)}, "holds no adapter"),
        ({"split_step": 0}, "split_step"),
        ({"server_id": "edge-9"}, "not this server"),
        ({"members": ()}, "members"),
        ({"members": (Member("../x", "ana", "p", 1),)}, "task_id"),
    ],
)
def test_unrunnable_batches_are_named(changes: dict[str, object], names: str) -> None:
    assert names in " ".join(batch_problems(batch(**changes), "edge-0", {"ana"}))


def test_a_latent_survives_the_wire_bit_for_bit() -> None:
    latent = np.random.default_rng(0).standard_normal((1, 4, 16, 16)).astype(np.float32)
    handoff = Handoff(Member("t1", "ana", "p", 1), 6, 3, latent, "edge-0", 0.2)
    back = handoff_from_proto(
        hybrid_pb2.LatentHandoff.FromString(handoff_to_proto(handoff).SerializeToString())
    )
    assert back.latent is not None and np.array_equal(back.latent, latent) and back.done_step == 3


def test_a_truncated_latent_is_refused() -> None:
    message = handoff_to_proto(Handoff(Member("t1", "ana", "p", 1), 6, 3, np.zeros((1, 4, 2, 2), np.float32)))
    message.latent = message.latent[:-4]
    with pytest.raises(BadLatent, match="do not fill"):
        handoff_from_proto(message)
