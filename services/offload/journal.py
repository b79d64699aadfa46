"""The coordinator's journal: every request's track and every message it decided to send, on disk
(SQLite), so a restarted coordinator carries on where the last one stopped.

A track is written (received, planned with its split and batch, at a device, taken back, ended) before
the message that caused the change is acked, and each message the change sends is written to the
outbox in the same transaction, before it is published; its row is deleted once the broker confirms
it. On start the coordinator reloads the unfinished tracks and publishes again what the outbox still
holds. An ended request keeps its terminal event here, so a duplicate of it is answered with that event.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.common.hybrid import PersonalRequest
from services.offload.core import Stage, Track

Kind = Literal["batch", "handoff", "completed", "failed"]
TERMINAL_KINDS: tuple[Kind, ...] = ("completed", "failed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    task_id TEXT PRIMARY KEY, stage TEXT NOT NULL, track TEXT NOT NULL, terminal_kind TEXT, terminal BLOB
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, task_id TEXT NOT NULL, target TEXT NOT NULL, body BLOB NOT NULL, expires_at REAL
);
"""


@dataclass(frozen=True)
class Outgoing:
    """A message the coordinator decided to send, as it is journaled until the broker confirms it."""

    kind: Kind
    task_id: str  # the request it is about (an edge batch: the batch id)
    target: str  # the edge server, the user (its device) or the client's reply queue
    body: bytes  # the serialized protobuf message
    expires_at: float = 0.0  # a handoff's report deadline (epoch s): stale after it; 0 = none
    seq: int = 0  # its outbox row, once journaled


class OffloadJournal:
    def __init__(self, path: Path) -> None:
        # The settings of `services.common.sqlite.open_db` (WAL, autocommit: a commit survives a
        # crash), on a connection the bus thread may use although another thread opened it.
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def commit(self, tracks: Iterable[Track], outgoing: Iterable[Outgoing]) -> list[Outgoing]:
        """Write the changed tracks and the messages they send in one transaction; the messages come
        back numbered by their outbox rows (for `sent`)."""
        rows = [(t.request.task_id, t.stage.value, json.dumps(track_to_json(t))) for t in tracks]
        outgoing = list(outgoing)
        if not rows and not outgoing:
            return []
        self.db.execute("BEGIN")
        try:
            upsert = (
                "INSERT INTO requests (task_id, stage, track) VALUES (?, ?, ?) ON CONFLICT(task_id) "
                "DO UPDATE SET stage = excluded.stage, track = excluded.track"
            )
            self.db.executemany(upsert, rows)
            numbered = [self._add_to_outbox(out) for out in outgoing]
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return numbered

    def _add_to_outbox(self, out: Outgoing) -> Outgoing:
        cursor = self.db.execute(
            "INSERT INTO outbox (kind, task_id, target, body, expires_at) VALUES (?, ?, ?, ?, ?)",
            (out.kind, out.task_id, out.target, out.body, out.expires_at),
        )
        if out.kind in TERMINAL_KINDS:
            self.db.execute(
                "UPDATE requests SET terminal_kind = ?, terminal = ? WHERE task_id = ?",
                (out.kind, out.body, out.task_id),
            )
        return dataclasses.replace(out, seq=int(cursor.lastrowid or 0))

    def sent(self, seqs: Iterable[int]) -> None:
        """The broker confirmed these messages: they need not be sent again."""
        self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def unsent(self) -> list[Outgoing]:
        """Messages written but not confirmed when the last coordinator stopped, in order."""
        query = "SELECT kind, task_id, target, body, expires_at, seq FROM outbox ORDER BY seq"
        return [Outgoing(k, t, g, bytes(b), e or 0.0, s) for k, t, g, b, e, s in self.db.execute(query)]

    def unfinished(self) -> list[Track]:
        query = "SELECT track FROM requests WHERE stage != ? ORDER BY rowid"
        return [track_from_json(json.loads(row[0])) for row in self.db.execute(query, (Stage.DONE.value,))]

    def known(self, task_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM requests WHERE task_id = ?", (task_id,)).fetchone() is not None

    def terminal(self, task_id: str) -> Outgoing | None:
        """The terminal event of an ended request (its target left empty: the asker's reply queue)."""
        row = self.db.execute(
            "SELECT terminal_kind, terminal FROM requests WHERE task_id = ? AND terminal IS NOT NULL",
            (task_id,),
        ).fetchone()
        return None if row is None else Outgoing(row[0], task_id, "", bytes(row[1]))

    def close(self) -> None:
        self.db.close()


def track_to_json(track: Track) -> dict[str, Any]:
    data = dataclasses.asdict(track)
    data["stage"] = track.stage.value
    return data


def track_from_json(data: dict[str, Any]) -> Track:
    request = PersonalRequest(**data.pop("request"))
    stage = Stage(data.pop("stage"))
    return Track(request=request, stage=stage, **data)
