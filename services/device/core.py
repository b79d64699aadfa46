"""The device's rules, free of the bus and of torch: which handoffs it may take, and its pace."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

from services.common.hybrid import Handoff
from services.edge.core import safe_name


def handoff_problems(handoff: Handoff, user: str) -> Iterator[str]:
    """What keeps this device from finishing `handoff`, each naming its field."""
    if handoff.member.user_id != user:
        yield f"user_id {handoff.member.user_id!r} is not this device's user ({user!r})"
    if not safe_name(handoff.member.task_id):
        yield f"task_id must be a name of [A-Za-z0-9._-], got {handoff.member.task_id!r}"
    if not 0 <= handoff.done_step < handoff.steps:
        yield f"done_step must be in 0..steps-1 ({handoff.steps - 1}), got {handoff.done_step}"


def handoff_stale(handoff: Handoff, now: float) -> bool:
    """True once the coordinator's report deadline (epoch s) has passed: it has taken the request back
    or failed it by then, so finishing it would be work whose report is ignored."""
    return handoff.report_by > 0 and now > handoff.report_by


def paced_s(steps_left: int, steps_per_s: float) -> float:
    """Seconds the device's phase takes at its pace: a faster machine waits out the difference, so a
    device declared slow behaves slow."""
    return steps_left / steps_per_s


def device_id(user: str) -> str:
    return f"{user}@{socket.gethostname()}-{os.getpid()}"
