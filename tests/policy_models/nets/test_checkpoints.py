"""Checkpoint round trip, integrity checks, and no unpickling."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from policy_models.checkpoints import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    restore_modules,
    save_checkpoint,
)
from policy_models.nets import AttentionEncoder, DiffusionActor, TwinCritic
from tests.policy_models.nets.helpers import attention_encoder, per_task_actor, per_task_critic, random_obs


def _modules() -> dict[str, torch.nn.Module]:
    return {"encoder": attention_encoder(1), "actor": per_task_actor(2), "critic": per_task_critic(3)}


def _outputs(modules: dict[str, torch.nn.Module]) -> list[torch.Tensor]:
    state = modules["encoder"](random_obs(3, 4, 10))
    action, log_prob, _ = modules["actor"](state, deterministic=True)
    return [state.pooled, action, log_prob, *modules["critic"](state, action)]


def test_round_trip_restores_identical_outputs(tmp_path: Path) -> None:
    modules = _modules()
    save_checkpoint(tmp_path, modules, {"policy": "eat", "sim": {"n_servers": 4}})
    states, config = load_checkpoint(tmp_path)
    assert config["policy"] == "eat" and config["sim"] == {"n_servers": 4}
    assert config["format_version"] == FORMAT_VERSION and config["created_at"]
    assert config["weights_sha256"] == hashlib.sha256((tmp_path / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert config["tensor_count"] == sum(len(m.state_dict()) for m in modules.values())
    classes = {
        "AttentionEncoder": AttentionEncoder,
        "DiffusionActor": DiffusionActor,
        "TwinCritic": TwinCritic,
    }
    rebuilt = {name: classes[entry["class"]](**entry["config"]) for name, entry in config["modules"].items()}
    restore_modules(rebuilt, states)
    for original, restored in zip(_outputs(modules), _outputs(rebuilt), strict=True):
        assert torch.equal(original, restored)


def test_a_tampered_weights_file_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _modules(), {})
    weights = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    weights[-5] ^= 0x01  # one bit inside the tensor data
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _modules(), {})
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_checkpoint(tmp_path)


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _modules(), {})
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(tmp_path)


def test_bad_arguments_are_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a", _modules(), {"weights_sha256": "x"})
    with pytest.raises(ValueError, match=re.escape("no '.'")):
        save_checkpoint(tmp_path / "b", {"actor.v2": per_task_actor()}, {})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c", _modules(), {"not_json": object()})
    assert not any(tmp_path.iterdir())


def test_restore_needs_every_module(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"encoder": attention_encoder()}, {})
    states, _ = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="actor"):
        restore_modules({"encoder": attention_encoder(), "actor": per_task_actor()}, states)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, _modules(), {})

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(target, name, refuse)
    states, _ = load_checkpoint(tmp_path)
    assert set(states) == {"encoder", "actor", "critic"}
