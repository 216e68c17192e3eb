"""The append-only query log: key, time, image digest, answer, detector verdict and the run the
caller named (header ``X-Run-Id``; empty if none). A query is
answered only after its row is committed (WAL, synchronous=FULL), so a server killed with
SIGKILL loses nothing it acknowledged."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["VERDICTS", "QueryLog", "Row"]

VERDICTS = ("none", "pass", "flag", "reject")
"""No detector; a detector let the query through; flagged it silently (answered); rejected it."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, time REAL NOT NULL,
    digest TEXT NOT NULL, answer TEXT NOT NULL, verdict TEXT NOT NULL, run TEXT NOT NULL DEFAULT '');
CREATE TRIGGER IF NOT EXISTS queries_append_only_u BEFORE UPDATE ON queries
    BEGIN SELECT RAISE(ABORT, 'the query log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS queries_append_only_d BEFORE DELETE ON queries
    BEGIN SELECT RAISE(ABORT, 'the query log is append-only'); END;
"""


@dataclass(frozen=True)
class Row:
    seq: int
    key: str
    time: float
    digest: str
    answer: str
    verdict: str
    run: str


def _select(conn: sqlite3.Connection, run: str | None) -> list[Row]:
    """The rows in order (of one run, if given); a log written before runs were recorded has
    them all under the empty run."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(queries)")}
    sql = "SELECT seq, key, time, digest, answer, verdict, " + ("run" if "run" in columns else "''") + " FROM queries"
    args: tuple[str, ...] = ()
    if run is not None:
        sql, args = sql + " WHERE run = ?", (run,)
    return [Row(*r) for r in conn.execute(sql + " ORDER BY seq", args)]


class QueryLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(queries)")}
        if "run" not in columns:  # a log written before runs were recorded
            self._conn.execute("ALTER TABLE queries ADD COLUMN run TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()

    def append(self, key: str, digests: list[str], answers: list[Any], verdicts: list[str], run: str = "") -> None:
        """One row per image of a request, committed before it returns."""
        now = time.time()
        rows = [(key, now, d, json.dumps(a), v, run) for d, a, v in zip(digests, answers, verdicts, strict=True)]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT INTO queries (key, time, digest, answer, verdict, run) "
                                       "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")  # the next request starts clean; this one is refused (500)
                raise

    @staticmethod
    def read(path: str | Path, run: str | None = None) -> list[Row]:
        """Every row of the log at ``path`` in order, opened read-only (a live server's log is
        neither locked nor changed)."""
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            return _select(conn, run)
        finally:
            conn.close()

    def rows(self, run: str | None = None) -> list[Row]:
        """Every row in order (of one run, if given)."""
        with self._lock:
            return _select(self._conn, run)

    def count(self, key: str | None = None) -> int:
        with self._lock:
            sql, args = ("SELECT count(*) FROM queries", ()) if key is None else \
                ("SELECT count(*) FROM queries WHERE key = ?", (key,))
            return int(self._conn.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        self._conn.close()
