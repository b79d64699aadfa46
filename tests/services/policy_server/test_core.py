"""The pure core without a broker or gRPC: loading policies, refusing updates, validating snapshots."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from eat.v1 import learning_pb2
from policy_models.live import ServerInfo, Snapshot
from policy_models.obs import OBS_SPEC_VERSION
from services.common.bus import Delivery, Reject
from services.common.topology import POLICY_UPDATES
from services.policy_server.core import (
    InvalidSnapshot,
    PolicyUpdate,
    UpdateRefused,
    checkpoint_path,
    load_initial,
    load_update,
    snapshot_problems,
)
from services.policy_server.server import PolicyHolder, UpdateListener
from tests.services.policy_server.conftest import (
    save_tiny_checkpoint,
    server_info,
    settings,
    startable_snapshot,
    task,
)


def update(version: int, uri: str | Path, obs_spec_version: int = OBS_SPEC_VERSION) -> PolicyUpdate:
    return PolicyUpdate(version, str(uri), "eat", obs_spec_version)


def test_a_heuristic_serves_as_version_0_and_a_checkpoint_as_version_1(tiny_checkpoint: Path) -> None:
    heuristic = load_initial(settings(policy="reuse"), clock=lambda: 123.0)
    assert (heuristic.version, heuristic.name, heuristic.algorithm, heuristic.loaded_at) == (
        0,
        "reuse",
        "",
        123.0,
    )
    learned = load_initial(settings(policy=f"checkpoint:{tiny_checkpoint}"))
    assert (learned.version, learned.name, learned.checkpoint_uri) == (1, "eat", str(tiny_checkpoint))


def test_an_update_builds_a_new_policy_and_leaves_the_serving_one_alone(tiny_checkpoint: Path) -> None:
    serving = load_initial(settings(policy="reuse"))
    promoted = load_update(serving, update(5, tiny_checkpoint.as_uri()), settings())
    assert (promoted.version, promoted.name, promoted.algorithm) == (5, "eat", "eat")
    assert promoted.checkpoint_uri == tiny_checkpoint.as_uri()
    assert promoted.scheduler is not serving.scheduler and serving.version == 0
    assert len(promoted.decide(startable_snapshot()).action) == 2 + promoted.scheduler.cfg.visible_queue


@pytest.mark.parametrize(
    ("version", "obs_spec", "kind", "message"),
    [
        (5, OBS_SPEC_VERSION + 1, "obs_spec", f"observation spec v{OBS_SPEC_VERSION + 1}"),
        (3, OBS_SPEC_VERSION, "stale", "v3 is not newer than the serving v3"),
        (2, OBS_SPEC_VERSION, "stale", "v2 is not newer than the serving v3"),
    ],
)
def test_updates_for_another_spec_or_not_newer_are_refused(
    tiny_checkpoint: Path, version: int, obs_spec: int, kind: str, message: str
) -> None:
    serving = load_update(load_initial(settings()), update(3, tiny_checkpoint), settings())
    with pytest.raises(UpdateRefused, match=message) as refused:
        load_update(serving, update(version, tiny_checkpoint, obs_spec), settings())
    assert refused.value.kind == kind


def test_checkpoints_that_do_not_load_are_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    serving = load_initial(settings())
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not the weights")
    wrong_size = tmp_path / "wrong-size"
    shutil.copytree(tiny_checkpoint, wrong_size)
    saved = json.loads((wrong_size / "config.json").read_text())
    saved["action_dim"] += 1
    (wrong_size / "config.json").write_text(json.dumps(saved))
    for uri, reason in [
        (tmp_path / "missing", "neither a checkpoint nor a training run"),
        (corrupt, "sha256"),
        (wrong_size, "action_dim"),
        ("s3://bucket/run", "unsupported checkpoint URI scheme 's3'"),
        ("", "empty checkpoint URI"),
    ]:
        with pytest.raises(UpdateRefused, match=reason) as refused:
            load_update(serving, update(9, uri), settings())
        assert refused.value.kind == "checkpoint"


def test_checkpoint_uris_are_paths_or_local_file_uris() -> None:
    assert checkpoint_path("/runs/eat n4/best") == Path("/runs/eat n4/best")
    assert checkpoint_path("runs/eat") == Path("runs/eat")
    assert checkpoint_path("file:///runs/eat%20n4/best") == Path("/runs/eat n4/best")
    assert checkpoint_path("file://localhost/runs/eat") == Path("/runs/eat")
    with pytest.raises(ValueError, match="another host"):
        checkpoint_path("file://trainer-0/runs/eat")


def test_a_sound_snapshot_has_no_problems() -> None:
    assert list(snapshot_problems(startable_snapshot())) == []


def test_snapshot_problems_name_what_is_wrong() -> None:
    broken = Snapshot(
        now_s=float("nan"),
        servers=(server_info(0), ServerInfo("edge-0", True, remaining_s=-1.0, speed=-2.0)),
        queue=(task("", patches=0), task("t-a", waiting_s=float("inf"))),
        total_queued=2,
    )
    problems = list(snapshot_problems(broken))
    assert problems == [
        "now_s must be a finite number >= 0, got nan",
        "repeated server_ids ['edge-0']",
        "empty task_id",
        "server 'edge-0': remaining_s must be finite and >= 0, got -1.0",
        "server 'edge-0': speed_factor must be > 0, got -2.0",
        "task '': patches must be >= 1, got 0",
        "task 't-a': waiting_s must be finite and >= 0, got inf",
    ]
    with pytest.raises(InvalidSnapshot, match="no servers"):
        load_initial(settings()).decide(Snapshot(0.0, (), (task("t-a"),), 1))


def delivery(message: learning_pb2.PolicyUpdated | bytes, type_name: str | None = None) -> Delivery:
    body = message if isinstance(message, bytes) else message.SerializeToString()
    name = learning_pb2.PolicyUpdated.DESCRIPTOR.full_name if type_name is None else type_name
    return Delivery(POLICY_UPDATES.name, name, body, {}, False, "policy.updated")


def test_the_listener_swaps_good_updates_and_rejects_the_rest(tmp_path: Path) -> None:
    """The bus handler alone (no broker): Reject is what dead-letters a message with its reason."""
    holder = PolicyHolder(load_initial(settings()))
    listener = UpdateListener(settings(), holder)  # never started: no connection is made
    first, second = save_tiny_checkpoint(tmp_path / "a", seed=1), save_tiny_checkpoint(tmp_path / "b", seed=2)
    good = learning_pb2.PolicyUpdated(version=4, checkpoint_uri=str(first), obs_spec_version=OBS_SPEC_VERSION)
    listener.handle(delivery(good))
    assert (holder.current.version, holder.current.checkpoint_uri) == (4, str(first))
    stale = learning_pb2.PolicyUpdated(
        version=4, checkpoint_uri=str(second), obs_spec_version=OBS_SPEC_VERSION
    )
    with pytest.raises(Reject, match="not newer"):
        listener.handle(delivery(stale))
    with pytest.raises(Reject, match="cannot decode"):
        listener.handle(delivery(b"\xff\xff\xff"))
    with pytest.raises(Reject, match=re.escape("expected a eat.v1.PolicyUpdated")):
        listener.handle(delivery(good, type_name="eat.v1.Experience"))
    assert holder.current.checkpoint_uri == str(first)
    newer = learning_pb2.PolicyUpdated(
        version=6, checkpoint_uri=str(second), obs_spec_version=OBS_SPEC_VERSION
    )
    listener.handle(delivery(newer))
    assert (holder.current.version, holder.current.checkpoint_uri) == (6, str(second))
