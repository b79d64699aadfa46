"""Errors of a gang, named so the executor can map them to a task's failure reason.

`GangFormationError` means the group never formed (FAILURE_REASON_RENDEZVOUS_FAILED material);
`GangMemberLost` means a formed group broke mid-run: a member died, left or stopped answering within
the collective timeout (FAILURE_REASON_GANG_MEMBER_LOST material).
"""

from __future__ import annotations


class GangError(RuntimeError):
    """Something went wrong with a gang's process group."""


class GangFormationError(GangError):
    """The members did not all meet at the rendezvous in time (or the store could not start)."""


class GangMemberLost(GangError):
    """A collective failed in a formed gang: a member died, left, or did not answer in time."""
