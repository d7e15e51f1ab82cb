"""The jobs, in SQLite (the standard library's ``sqlite3``, WAL mode, full sync): a job accepted is
on disk before its id is answered, and a restarted server finds every job it had.

One row a job. ``seq`` orders jobs first come, first served; ``id`` is the random name a client
knows a job by (32 hex digits: nothing a request says reaches the filesystem but an id the store
gave). ``argv`` is the job's options as the CLI takes them (JSON), ``key`` the compiled program and
working shape it needs (jobs with one key can run as one batch). Progress (``iteration``,
``losses``) is written at chunk boundaries by the worker; ``batch`` names the batch a job ran in.
"""

from __future__ import annotations

import json
import pathlib
import re
import secrets
import sqlite3
import threading
import time
from typing import Any, Optional

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
ID_PATTERN = re.compile(r"[0-9a-f]{32}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    client TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    argv TEXT NOT NULL,
    key TEXT NOT NULL,
    config TEXT NOT NULL,
    iteration INTEGER NOT NULL DEFAULT 0,
    iterations INTEGER NOT NULL,
    losses TEXT NOT NULL DEFAULT '[]',
    parts TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    batch TEXT,
    batch_size INTEGER,
    cancel INTEGER NOT NULL DEFAULT 0
)
"""


def valid_id(job_id: str) -> bool:
    """Whether ``job_id`` is of the form the store gives (checked before any look-up)."""
    return bool(ID_PATTERN.fullmatch(job_id))


class JobStore:
    """The job table of one data directory. Safe to share between threads (one connection, a lock)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a job answered 201 survives a power cut too
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, *, client: str, argv: list[str], key: str, config: dict, iterations: int,
            job_id: Optional[str] = None) -> str:
        """Queue a job; returns its id (new and random unless given)."""
        job_id = job_id or secrets.token_hex(16)
        self._run("INSERT INTO jobs (id, client, status, created, argv, key, config, iterations) "
                  "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                  (job_id, client, time.time(), json.dumps(argv), key, json.dumps(config), iterations))
        return job_id

    def get(self, job_id: str) -> Optional[dict[str, Any]]:
        """The job as a dict (JSON fields decoded), or None."""
        rows = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _decode(rows[0]) if rows else None

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs, newest first (the page's queue)."""
        return [_decode(r) for r in self._run("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))]

    def pending(self, client: str) -> int:
        """How many of ``client``'s jobs are queued or running."""
        return int(self._run("SELECT COUNT(*) FROM jobs WHERE client = ? AND status IN ('queued', 'running')",
                             (client,))[0][0])

    def next_batch(self, max_batch: int) -> list[dict[str, Any]]:
        """The oldest queued job and up to ``max_batch - 1`` more queued jobs with its key, oldest first.

        First come, first served across groups: the head of the queue always runs next, so a job
        waits only behind jobs older than it (and the batches they run in), never behind a newer group.
        """
        head = self._run("SELECT key FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1")
        if not head:
            return []
        rows = self._run("SELECT * FROM jobs WHERE status = 'queued' AND key = ? ORDER BY seq LIMIT ?",
                         (head[0]["key"], max_batch))
        return [_decode(r) for r in rows]

    def running(self) -> list[dict[str, Any]]:
        return [_decode(r) for r in self._run("SELECT * FROM jobs WHERE status = 'running' ORDER BY seq")]

    def start(self, ids: list[str], batch: str) -> None:
        """Mark ``ids`` running in ``batch`` (its size recorded with each)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for job_id in ids:
                self._db.execute("UPDATE jobs SET status = 'running', started = COALESCE(started, ?), batch = ?, "
                                 "batch_size = ? WHERE id = ? AND status = 'queued'",
                                 (time.time(), batch, len(ids), job_id))
            self._db.execute("COMMIT")

    def progress(self, updates: list[tuple[str, int, list[float], dict[str, float]]]) -> None:
        """(id, iteration, losses so far, latest loss parts) of running jobs, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for job_id, iteration, losses, parts in updates:
                self._db.execute("UPDATE jobs SET iteration = ?, losses = ?, parts = ? WHERE id = ?",
                                 (iteration, json.dumps(losses), json.dumps(parts), job_id))
            self._db.execute("COMMIT")

    def finish(self, job_id: str, status: str, error: Optional[str] = None) -> None:
        assert status in FINISHED
        self._run("UPDATE jobs SET status = ?, error = ?, finished = ? WHERE id = ? AND status != 'cancelled'",
                  (status, error, time.time(), job_id))

    def cancel(self, job_id: str) -> Optional[str]:
        """Cancel a job: a queued one at once; a running one is marked, and its result dropped.
        Returns the status after the call (None: no such job)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                self._db.execute("COMMIT")
                return None
            if row["status"] in ("queued", "running"):
                self._db.execute("UPDATE jobs SET status = 'cancelled', cancel = 1, finished = ? WHERE id = ?",
                                 (time.time(), job_id))
            self._db.execute("COMMIT")
            return "cancelled" if row["status"] in ("queued", "running") else row["status"]

    def requeue_running(self) -> list[str]:
        """After a crash or a drain: jobs left running go back to the queue (their batch's
        checkpoint, if any, lets them continue). Returns their ids."""
        ids = [r["id"] for r in self._run("SELECT id FROM jobs WHERE status = 'running'")]
        self._run("UPDATE jobs SET status = 'queued' WHERE status = 'running'")
        return ids


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for name in ("argv", "config", "losses", "parts"):
        out[name] = json.loads(out[name])
    return out
