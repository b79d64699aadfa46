"""The journal keeps every unfinished task across a restart, exactly as it was."""

from __future__ import annotations

from pathlib import Path

from services.aggregator.core import TaskRecord
from services.aggregator.journal import Journal
from services.common.domain import AttemptResult, ImageInfo, QosSpec, Reason, Task


def record(task_id: str, state: str) -> TaskRecord:
    task = Task(task_id, "p", "sd-a", 2, QosSpec(min_quality=0.2, max_steps=20), 1.0, 2.0, seed=5)
    result = AttemptResult(
        task_id, 2, False, Reason.GANG_MEMBER_LOST, "lost", ImageInfo("file:///x.png"), 1.0
    )
    return TaskRecord(task, state, attempt=2, gang=("e1", "e2"), steps=17, seed=5, result=result)


def test_unfinished_records_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    records = [record("a", "queued"), record("b", "running"), record("c", "completed"), record("d", "failed")]
    journal.save(records)
    journal.save([record("a", "evaluating")])  # a later state replaces the earlier one
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite3")
    unfinished = reopened.unfinished()
    assert [r.task.task_id for r in unfinished] == ["a", "b"]
    assert unfinished[0] == record("a", "evaluating") and unfinished[1] == record("b", "running")
    assert reopened.known("c") and not reopened.known("z")
