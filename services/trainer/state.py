"""Where the online trainer keeps what it must not lose: its state directory and the promoted policies.

State, <state_dir>/trainer/ (safetensors + JSON only, nothing is pickled):
  model.safetensors + config.json      every agent module (`policy_models.checkpoints` format)
  trainer_state.safetensors + .json    optimiser moments and the torch generator (`learning.train`)
  buffer/                              the replay buffer (`ReplayBuffer.save`)
  progress.json                        counters and the recently seen transition keys
A save is written to trainer.partial/ and swapped in by renames, so a crash mid-save leaves the last
complete state (trainer/, or trainer.old/ when the crash fell between the two renames).

Promoted policies, <policy_dir>/v000003/: a checkpoint that `make_policy("checkpoint:<dir>", cfg)`
loads. It is written to a hidden .v000003.partial/ and renamed, so a policy server never sees half of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from policy_models.checkpoints import (
    CONFIG_FILE,
    CheckpointError,
    load_checkpoint,
    restore_modules,
    save_checkpoint,
)
from policy_models.learning.agents import Agent
from policy_models.learning.buffer import ReplayBuffer
from policy_models.learning.sac import Optimizers
from policy_models.learning.train import (
    TRAINER_STATE,
    Generators,
    save_trainer_state,
    unflatten_optimizer_state,
)

STATE_DIR = "trainer"
BUFFER_DIR = "buffer"
PROGRESS_FILE = "progress.json"
VERSION_PATTERN = re.compile(r"v(\d+)")
# The state config keys a saved state must share with the running trainer to be resumed.
RESUME_KEYS = ("agent", "obs_spec_version", "obs_shapes", "action_dim")


# ----- the trainer's state -----------------------------------------------------------------------------
@dataclass
class SavedState:
    """What a load gives back besides the weights and optimiser moments it restores in place."""

    directory: Path
    buffer: ReplayBuffer
    generators: Generators
    progress: dict[str, Any]


def save_state(
    state_dir: Path,
    agent: Agent,
    optimizers: Optimizers,
    buffer: ReplayBuffer,
    generators: Generators,
    config: dict[str, Any],
    progress: dict[str, Any],
) -> Path:
    """Write a complete state to <state_dir>/trainer/ (through trainer.partial/); returns it."""
    target, partial, old = _state_paths(state_dir)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    buffer.save(partial / BUFFER_DIR)
    save_trainer_state(partial, optimizers, generators)
    (partial / PROGRESS_FILE).write_text(json.dumps(progress))
    save_checkpoint(partial, agent.modules(), config)  # config.json last: it marks a complete state
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def find_state(state_dir: Path) -> Path | None:
    """The newest complete state under `state_dir`, or None (a fresh start)."""
    target, _, old = _state_paths(state_dir)
    for candidate in (target, old):
        if (candidate / CONFIG_FILE).is_file() and (candidate / PROGRESS_FILE).is_file():
            return candidate
    return None


def load_state(
    directory: Path, agent: Agent, optimizers: Optimizers, expected: Mapping[str, Any], seed: int
) -> SavedState:
    """Restore weights and optimisers in place from `directory`; refuses a state saved for another
    agent or observation shape (CheckpointError names the key)."""
    states, saved = load_checkpoint(directory)
    check_resumable(saved, expected, directory)
    restore_modules(agent.modules(), states)
    tensors = safetensors.torch.load_file(str(directory / f"{TRAINER_STATE}.safetensors"))
    index = json.loads((directory / f"{TRAINER_STATE}.json").read_text())
    for name, optimizer in optimizers.named().items():
        optimizer.load_state_dict(unflatten_optimizer_state(index["optimizers"][name], tensors))
    generators = Generators.seeded(seed)
    generators.numpy.bit_generator.state = index["numpy_generator"]
    generators.torch.set_state(tensors["generator.torch"])
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    # The buffer's sampling generator is not saved; reseeding it from the update count is deterministic.
    updates = int(progress.get("counters", {}).get("updates", 0))
    buffer = ReplayBuffer.load(directory / BUFFER_DIR, seed=seed + updates)
    return SavedState(directory, buffer, generators, progress)


def check_resumable(saved: Mapping[str, Any], expected: Mapping[str, Any], directory: Path) -> None:
    for key in RESUME_KEYS:
        wanted = json.loads(json.dumps(expected[key]))  # as it reads back from JSON
        if saved.get(key) != wanted:
            raise CheckpointError(
                f"{directory}: saved with {key}={saved.get(key)!r}, these settings give {wanted!r}; "
                "restore the settings or move the state directory away to start afresh"
            )


def _state_paths(state_dir: Path) -> tuple[Path, Path, Path]:
    root = state_dir / STATE_DIR
    return root, root.with_name(f"{STATE_DIR}.partial"), root.with_name(f"{STATE_DIR}.old")


# ----- promoted policies -------------------------------------------------------------------------------
def version_directory(policy_dir: Path, version: int) -> Path:
    return policy_dir / f"v{version:06d}"


def promoted_versions(policy_dir: Path) -> list[tuple[int, Path]]:
    """Complete promoted checkpoints (v<digits>/ holding config.json), oldest first."""
    if not policy_dir.is_dir():
        return []
    found = []
    for path in policy_dir.iterdir():
        match = VERSION_PATTERN.fullmatch(path.name)
        if match and (path / CONFIG_FILE).is_file():
            found.append((int(match.group(1)), path.resolve()))
    return sorted(found)


def write_policy_checkpoint(
    directory: Path, modules: Mapping[str, nn.Module], config: dict[str, Any]
) -> None:
    """Write the checkpoint to a hidden sibling, then rename it to `directory` (which must not exist)."""
    if directory.exists():
        raise FileExistsError(f"{directory} exists already: promoted versions are never overwritten")
    partial = directory.with_name(f".{directory.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by a crash mid-write
    save_checkpoint(partial, modules, config)
    os.replace(partial, directory)


def read_policy_config(directory: Path) -> dict[str, Any]:
    """The config.json of a promoted checkpoint (to announce it again after a restart)."""
    return json.loads((directory / CONFIG_FILE).read_text())
