"""The append-only query log: key, time, image digest, answer, detector verdict. A query is
answered only after its row is committed (WAL, synchronous=FULL), so a server killed with
SIGKILL loses nothing it acknowledged."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["QueryLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, time REAL NOT NULL,
    digest TEXT NOT NULL, answer TEXT NOT NULL, verdict TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS queries_append_only_u BEFORE UPDATE ON queries
    BEGIN SELECT RAISE(ABORT, 'the query log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS queries_append_only_d BEFORE DELETE ON queries
    BEGIN SELECT RAISE(ABORT, 'the query log is append-only'); END;
"""


class QueryLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def append(self, key: str, digests: list[str], answers: list[Any], verdicts: list[str]) -> None:
        """One row per image of a request, committed before it returns."""
        now = time.time()
        rows = [(key, now, d, json.dumps(a), v) for d, a, v in zip(digests, answers, verdicts, strict=True)]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT INTO queries (key, time, digest, answer, verdict) VALUES (?, ?, ?, ?, ?)",
                                   rows)
            self._conn.execute("COMMIT")

    def count(self, key: str | None = None) -> int:
        with self._lock:
            sql, args = ("SELECT count(*) FROM queries", ()) if key is None else \
                ("SELECT count(*) FROM queries WHERE key = ?", (key,))
            return int(self._conn.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        self._conn.close()
