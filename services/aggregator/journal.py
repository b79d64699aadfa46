"""The aggregator's journal: every task record on disk (SQLite), so a restart loses nothing.

Records are plain JSON (the domain dataclasses), written after each handled message and before its
ack. On start the aggregator reloads every task that has not ended.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from services.aggregator.core import TaskRecord
from services.common.domain import AttemptResult, ImageInfo, QosSpec, Reason, Task
from services.common.sqlite import open_db

TERMINAL = ("completed", "failed")


class Journal:
    def __init__(self, path: Path) -> None:
        self.db = open_db(
            path, "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, state TEXT, record TEXT)"
        )

    def save(self, records: list[TaskRecord]) -> None:
        if not records:
            return
        rows = [(r.task.task_id, r.state, json.dumps(to_json(r))) for r in records]
        self.db.execute("BEGIN")
        # An upsert keeps the row (and its rowid, the order tasks were accepted in) for a later state.
        upsert = (
            "INSERT INTO tasks VALUES (?, ?, ?) ON CONFLICT(task_id) "
            "DO UPDATE SET state = excluded.state, record = excluded.record"
        )
        self.db.executemany(upsert, rows)
        self.db.execute("COMMIT")

    def unfinished(self) -> list[TaskRecord]:
        placeholders = ",".join("?" * len(TERMINAL))
        query = f"SELECT record FROM tasks WHERE state NOT IN ({placeholders}) ORDER BY rowid"
        return [from_json(json.loads(row[0])) for row in self.db.execute(query, TERMINAL)]

    def known(self, task_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone() is not None

    def close(self) -> None:
        self.db.close()


def to_json(record: TaskRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    if record.result is not None and record.result.reason is not None:
        data["result"]["reason"] = record.result.reason.name
    return data


def from_json(data: dict[str, Any]) -> TaskRecord:
    task = dict(data.pop("task"))
    task["qos"] = QosSpec(**task["qos"])
    result = data.pop("result")
    if result is not None:
        result["reason"] = None if result["reason"] is None else Reason[result["reason"]]
        result["image"] = None if result["image"] is None else ImageInfo(**result["image"])
        result = AttemptResult(**result)
    data["gang"] = tuple(data["gang"])
    return TaskRecord(task=Task(**task), result=result, **data)
