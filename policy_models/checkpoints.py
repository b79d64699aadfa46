"""Checkpoints of the learned schedulers: safetensors weights plus a JSON config. Nothing is unpickled.

A checkpoint is a directory:
  model.safetensors  every module's state_dict, keys "<module name>.<tensor name>"
  config.json        the caller's config plus format_version, created_at, tensor_count, weights_sha256
                     and modules (class name and `config()` of each module that has one, so the
                     networks can be rebuilt from the checkpoint alone)
Both files are written through a temporary file and renamed, config.json last: a config.json whose hash
matches the weights belongs to a complete checkpoint. Loading reads the weights file once, checks its
sha256 against config.json and parses those same bytes, so what was verified is what is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RESERVED_KEYS = frozenset({"format_version", "created_at", "tensor_count", "weights_sha256", "modules"})

StateDicts = dict[str, dict[str, Tensor]]


class CheckpointError(ValueError):
    """A checkpoint that is present but cannot be trusted or understood."""


def save_checkpoint(
    directory: str | os.PathLike[str], modules: Mapping[str, nn.Module], config: dict
) -> None:
    """Write `modules`' weights and `config` (JSON-serialisable, without the reserved keys)."""
    clash = RESERVED_KEYS & config.keys()
    if clash:
        raise ValueError(f"config keys {sorted(clash)} are reserved for the checkpoint format")
    tensors = flatten_state_dicts(modules)
    weights = safetensors.torch.save(tensors)
    record = {
        **config,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tensor_count": len(tensors),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "modules": {name: describe_module(module) for name, module in modules.items()},
    }
    text = json.dumps(record, indent=2, sort_keys=True)  # fails on a non-JSON config before any write
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    _write_atomically(target / WEIGHTS_FILE, weights)
    _write_atomically(target / CONFIG_FILE, text.encode())


def load_checkpoint(directory: str | os.PathLike[str]) -> tuple[StateDicts, dict[str, Any]]:
    """(state dict per module name, config) of a checkpoint, after verifying the weights' sha256."""
    source = Path(directory)
    config = _read_config(source / CONFIG_FILE)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: unknown checkpoint format_version {version!r} (this code reads {FORMAT_VERSION})"
        )
    weights = _read_bytes(source / WEIGHTS_FILE)
    digest = hashlib.sha256(weights).hexdigest()
    if digest != config.get("weights_sha256"):
        raise CheckpointError(
            f"{source / WEIGHTS_FILE}: sha256 {digest} does not match config.json "
            f"({config.get('weights_sha256')}); the weights were changed or truncated"
        )
    tensors = safetensors.torch.load(weights)
    if len(tensors) != config.get("tensor_count"):
        raise CheckpointError(
            f"{source}: {len(tensors)} tensors, config.json says {config.get('tensor_count')}"
        )
    return split_state_dicts(tensors), config


def restore_modules(modules: Mapping[str, nn.Module], states: StateDicts) -> None:
    """Load each module's state dict strictly; every module must be in the checkpoint."""
    missing = modules.keys() - states.keys()
    if missing:
        raise CheckpointError(f"checkpoint has no weights for modules {sorted(missing)}")
    for name, module in modules.items():
        module.load_state_dict(states[name], strict=True)


def describe_module(module: nn.Module) -> dict[str, Any]:
    description: dict[str, Any] = {"class": type(module).__qualname__}
    if callable(getattr(module, "config", None)):
        description["config"] = module.config()
    return description


def flatten_state_dicts(modules: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """{"<module>.<tensor>": tensor}; copies are contiguous, on the CPU and share no memory (safetensors
    refuses tensors that alias one another, as tied weights do)."""
    tensors: dict[str, Tensor] = {}
    for name, module in modules.items():
        if not name or "." in name:
            raise ValueError(f"module name {name!r} must be non-empty and contain no '.'")
        for key, tensor in module.state_dict().items():
            tensors[f"{name}.{key}"] = tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
    return tensors


def split_state_dicts(tensors: Mapping[str, Tensor]) -> StateDicts:
    states: StateDicts = {}
    for full_key, tensor in tensors.items():
        name, _, key = full_key.partition(".")
        states.setdefault(name, {})[key] = tensor
    return states


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(_read_bytes(path))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file missing: {path}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
