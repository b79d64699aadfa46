"""Validation of task submissions: pure, one FieldError per offending field (named by its dotted path)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from eat.v1 import tasks_pb2
from services.common.events import CLIENT_REPLY_QUEUE_TEXT, is_client_reply_queue

TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class FieldProblem:
    field: str
    reason: str


@dataclass(frozen=True)
class Limits:
    models: tuple[str, ...]
    max_patches: int
    min_steps: int
    max_steps: int
    max_prompt_chars: int
    max_deadline_s: float
    nodes: int = 4  # servers in the cluster: no gang can be larger
    gang_sizes: tuple[int, ...] = (1, 2, 4, 8)  # gang sizes the timing profile has times for


def validate(submission: tasks_pb2.TaskSubmission, limits: Limits) -> list[FieldProblem]:
    """Everything wrong with a submission (empty when it may be admitted)."""
    problems: list[FieldProblem] = []

    def bad(field: str, reason: str) -> None:
        problems.append(FieldProblem(field, reason))

    if not TASK_ID.fullmatch(submission.task_id):
        bad("task_id", "must be 1..128 characters of [A-Za-z0-9._:-]")
    prompt = submission.prompt
    if not prompt.strip():
        bad("prompt", "must not be empty")
    elif len(prompt) > limits.max_prompt_chars:
        bad("prompt", f"must be at most {limits.max_prompt_chars} characters, got {len(prompt)}")
    if submission.model not in limits.models:
        bad("model", f"unknown model {submission.model!r}; known: {', '.join(limits.models)}")
    _validate_patches(submission.patches, limits, bad)
    if submission.reply_to and not is_client_reply_queue(submission.reply_to):
        bad("reply_to", f"must be {CLIENT_REPLY_QUEUE_TEXT}, got {submission.reply_to[:64]!r}")
    _validate_qos(submission, limits, bad)
    return problems


def _validate_patches(patches: int, limits: Limits, bad: Callable[[str, str], None]) -> None:
    """A gang the cluster can never form would only wait and fail later: refuse it now."""
    if not 1 <= patches <= limits.max_patches:
        bad("patches", f"must be in [1, {limits.max_patches}], got {patches}")
    elif patches > limits.nodes:
        bad("patches", f"needs {patches} servers, the cluster has {limits.nodes}")
    elif patches not in limits.gang_sizes:
        sizes = ", ".join(map(str, limits.gang_sizes))
        bad("patches", f"must be a gang size of the timing profile ({sizes}), got {patches}")


def _validate_qos(
    submission: tasks_pb2.TaskSubmission, limits: Limits, bad: Callable[[str, str], None]
) -> None:
    qos = submission.qos
    if not (math.isfinite(qos.min_quality) and -1.0 <= qos.min_quality <= 1.0):
        bad("qos.min_quality", f"must be in [-1, 1] (CLIP scale), got {qos.min_quality}")
    if not (math.isfinite(qos.deadline_s) and 0.0 <= qos.deadline_s <= limits.max_deadline_s):
        bad("qos.deadline_s", f"must be in [0, {limits.max_deadline_s:g}] seconds, got {qos.deadline_s}")
    lo, hi = limits.min_steps, limits.max_steps
    min_steps = qos.min_steps if qos.HasField("min_steps") else lo
    max_steps = qos.max_steps if qos.HasField("max_steps") else hi
    if qos.HasField("min_steps") and not lo <= min_steps <= hi:
        bad("qos.min_steps", f"must be in [{lo}, {hi}], got {min_steps}")
    if qos.HasField("max_steps") and not lo <= max_steps <= hi:
        bad("qos.max_steps", f"must be in [{lo}, {hi}], got {max_steps}")
    if min_steps > max_steps:
        bad("qos.max_steps", f"must be >= qos.min_steps ({min_steps}), got {max_steps}")
