"""The persistent job store: tuning jobs and their events in one SQLite file.

Jobs survive a gateway restart: ``recover()`` at start-up marks jobs that were running as
ERRORED with the reason "interrupted"; queued jobs stay queued, finished jobs stay listed.
The store is synchronous and thread-safe; the job manager calls it off the event loop.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    method TEXT NOT NULL,
    base_model TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    reasons TEXT NOT NULL DEFAULT '[]',
    result TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, seq)
);
"""


class JobState(enum.Enum):
    """Caikit's training states (caikit.interfaces.runtime.data_model.TrainingStatus)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    ERRORED = "ERRORED"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.CANCELED, JobState.ERRORED)


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str  # the adapter the job publishes
    method: str
    base_model: str
    state: JobState
    spec: dict[str, Any]
    progress: dict[str, Any] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    seq: int
    created_at: float
    level: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        method=row["method"],
        base_model=row["base_model"],
        state=JobState(row["state"]),
        spec=json.loads(row["spec"]),
        progress=json.loads(row["progress"]),
        reasons=tuple(json.loads(row["reasons"])),
        result=json.loads(row["result"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class JobNotFound(KeyError):
    pass


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._states: dict[str, int] = {}  # jobs by state, recounted when a job changes state
        with self._lock:
            self._recount(self._db)

    def state_counts(self) -> dict[str, int]:
        """Jobs by state (``JobState`` values), as of the last change: no query (metrics read it)."""
        return self._states

    def _recount(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        self._states = {str(row[0]): int(row[1]) for row in rows}  # replaced whole: readers see one

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create(self, job_id: str, name: str, method: str, base_model: str, spec: dict[str, Any]) -> JobRecord:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, name, method, base_model, state, spec, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, method, base_model, JobState.QUEUED.value, json.dumps(spec), now),
            )
            self._recount(db)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _record(row)

    def page(self, *, after: str | None = None, limit: int = 20) -> list[JobRecord]:
        """Newest first; ``after`` is the id of the last job of the previous page."""
        limit = max(1, min(limit, 100))
        with self._lock:
            if after is None:
                rows = self._db.execute(
                    "SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE (created_at, id) < "
                    "(SELECT created_at, id FROM jobs WHERE id = ?) "
                    "ORDER BY created_at DESC, id DESC LIMIT ?",
                    (after, limit),
                ).fetchall()
        return [_record(row) for row in rows]

    def count_unfinished(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)",
                (JobState.QUEUED.value, JobState.RUNNING.value),
            ).fetchone()
        return int(row[0])

    def name_in_use(self, name: str) -> bool:
        """Whether an unfinished job will publish ``name``."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM jobs WHERE name = ? AND state IN (?, ?) LIMIT 1",
                (name, JobState.QUEUED.value, JobState.RUNNING.value),
            ).fetchone()
        return row is not None

    def set_state(
        self,
        job_id: str,
        state: JobState,
        *,
        reasons: list[str] | None = None,
        result: dict[str, Any] | None = None,
    ) -> JobRecord:
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if not JobState(row["state"]).finished:  # a finished job stays as it ended
                sets = ["state = ?"]
                values: list[Any] = [state.value]
                if state is JobState.RUNNING:
                    sets.append("started_at = ?")
                    values.append(now)
                if state.finished:
                    sets.append("finished_at = ?")
                    values.append(now)
                if reasons is not None:
                    sets.append("reasons = ?")
                    values.append(json.dumps(reasons))
                if result is not None:
                    sets.append("result = ?")
                    values.append(json.dumps(result))
                db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*values, job_id))  # noqa: S608
                self._recount(db)
        return self.get(job_id)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    def add_event(
        self, job_id: str, level: str, message: str, data: dict[str, Any] | None = None
    ) -> JobEvent:
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()
            seq = int(row[0])
            db.execute(
                "INSERT INTO events (job_id, seq, created_at, level, message, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, seq, now, level, message, json.dumps(data or {})),
            )
        return JobEvent(job_id, seq, now, level, message, dict(data or {}))

    def events(self, job_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, max(1, min(limit, 10_000))),
            ).fetchall()
        return [
            JobEvent(r["job_id"], r["seq"], r["created_at"], r["level"], r["message"], json.loads(r["data"]))
            for r in rows
        ]

    def recover(self) -> tuple[list[str], list[str]]:
        """At start-up: jobs a previous process left RUNNING end ERRORED with the reason
        "interrupted"; QUEUED jobs stay queued. Returns (interrupted ids, queued ids, oldest first)."""
        now = time.time()
        with self._transaction() as db:
            running = [
                row["id"]
                for row in db.execute("SELECT id FROM jobs WHERE state = ?", (JobState.RUNNING.value,))
            ]
            for job_id in running:
                db.execute(
                    "UPDATE jobs SET state = ?, reasons = ?, finished_at = ? WHERE id = ?",
                    (JobState.ERRORED.value, json.dumps(["interrupted"]), now, job_id),
                )
            queued = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM jobs WHERE state = ? ORDER BY created_at, id", (JobState.QUEUED.value,)
                )
            ]
            self._recount(db)
        return running, queued
