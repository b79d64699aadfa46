"""The edge worker's rules, free of the bus and of torch: what makes an edge batch runnable."""

from __future__ import annotations

from collections.abc import Iterator, Set

from services.common.hybrid import EdgeBatch

MAX_BATCH = 64


def batch_problems(batch: EdgeBatch, server_id: str, adapters: Set[str]) -> Iterator[str]:
    """What makes `batch` unrunnable on server `server_id` holding `adapters`, each naming its field."""
    if batch.server_id != server_id:
        yield f"server_id {batch.server_id!r} is not this server ({server_id!r})"
    if not batch.batch_id:
        yield "batch_id is empty"
    if not 1 <= len(batch.members) <= MAX_BATCH:
        yield f"members: a batch has 1..{MAX_BATCH}, got {len(batch.members)}"
    if not 1 <= batch.split_step <= batch.steps:
        yield f"split_step must be in 1..steps ({batch.steps}), got {batch.split_step}"
    yield from _member_problems(batch)
    if batch.adapter_user:
        # An adapter changes the UNet for every row of the batch: only one user's requests may share it.
        if len(batch.members) != 1 or batch.members[0].user_id != batch.adapter_user:
            yield f"adapter_user {batch.adapter_user!r} needs exactly one member of that user"
        if batch.adapter_user not in adapters:
            yield f"adapter_user {batch.adapter_user!r}: this server holds no adapter for that user"


def _member_problems(batch: EdgeBatch) -> Iterator[str]:
    task_ids = [m.task_id for m in batch.members]
    if len(set(task_ids)) != len(task_ids):
        yield "members: repeated task ids"
    for i, member in enumerate(batch.members):
        if not safe_name(member.task_id):
            yield f"members[{i}].task_id must be a name of [A-Za-z0-9._-], got {member.task_id!r}"
        if not member.user_id:
            yield f"members[{i}].user_id is empty"


def safe_name(value: str) -> bool:
    """A name that may be a folder of the result store (no separators, not . or ..)."""
    return bool(value) and value not in (".", "..") and all(c.isalnum() or c in "-_." for c in value)
