"""The results store: one SQLite file that an audit writes as it goes and a report reads back.

An audit is a list of *units* (one attack at one budget on one chunk of images, a patch's
crafting, a map). A unit's rows and its "done" mark go in one transaction, so a run killed at
any moment leaves either all of a unit or none of it, and the rerun does exactly the units
still missing: no row lost, none duplicated. Each unit draws its randomness from its own seed
(the run's seed and the unit's name), so the order in which units run, or a restart between
them, does not change any number.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medfool.errors import ConfigError

__all__ = ["ROW_FIELDS", "SCHEMA_VERSION", "ResultStore", "unit_seed"]

SCHEMA_VERSION = 1
ROW_FIELDS = ("stage", "attack", "budget", "image", "label", "clean_pred", "adv_pred", "clean_correct", "success",
              "l0", "l2", "linf", "psnr", "ssim", "ciede2000", "queries", "gradients", "time_s")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    stage TEXT NOT NULL, attack TEXT NOT NULL, budget TEXT NOT NULL, image INTEGER NOT NULL,
    label INTEGER, clean_pred INTEGER, adv_pred INTEGER, clean_correct INTEGER NOT NULL, success INTEGER NOT NULL,
    l0 REAL, l2 REAL, linf REAL, psnr REAL, ssim REAL, ciede2000 REAL,
    queries INTEGER, gradients INTEGER, time_s REAL,
    unit TEXT NOT NULL REFERENCES units(name),
    PRIMARY KEY (stage, attack, budget, image));
CREATE TABLE IF NOT EXISTS artifacts (name TEXT PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL,
                                      unit TEXT NOT NULL REFERENCES units(name));
CREATE TABLE IF NOT EXISTS cells (unit TEXT PRIMARY KEY REFERENCES units(name), place TEXT NOT NULL,
                                  wall_s REAL NOT NULL, retries INTEGER NOT NULL, executor TEXT NOT NULL);
PRAGMA user_version = {SCHEMA_VERSION};
"""


def unit_seed(seed: int, unit: str) -> int:
    """A seed of its own for every unit (stable across runs, platforms and restarts)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{unit}".encode()).digest()[:6], "big")


class ResultStore:
    """The audit's SQLite file. Open with :meth:`open`; use as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, readonly: bool = False) -> ResultStore:
        """Open (or create) the store; ``readonly`` opens an existing one without changing a byte
        of it (``medfool report``)."""
        p = Path(path)
        if (readonly or not create) and not p.is_file():
            raise ConfigError(f"{p}: no results store here (run 'medfool audit' first)")
        if readonly:
            try:
                conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute("SELECT count(*) FROM units").fetchone()
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{p}: not a readable results store ({exc})") from None
            if version != SCHEMA_VERSION:
                conn.close()
                raise ConfigError(f"{p}: results store of schema {version}, this medfool reads {SCHEMA_VERSION}")
            return cls(p, conn)
        try:
            conn = sqlite3.connect(p, isolation_level=None)  # explicit transactions below
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(f"{p}: results store of schema {version}, this medfool reads {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{p}: not a readable results store ({exc})") from None
        return cls(p, conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def claim(self, fingerprint: str, meta: dict[str, Any]) -> bool:
        """Bind the store to one run's settings, in one transaction (two processes cannot both
        find it empty): a new store gets ``meta`` and the fingerprint; a store with the same
        fingerprint is resumed; another fingerprint is refused. Returns True when resuming."""
        with self._transaction():
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if row is not None:
                if json.loads(row[0]) != fingerprint:
                    raise ConfigError(f"{self.path}: holds an audit made with other settings (model, data or "
                                      "config); rerun with --fresh to start over, or choose another --out")
                return True
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v, default=str)) for k, v in meta.items()])
            # last: a store without it was never started properly
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (json.dumps(fingerprint),))
            return False

    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str)))

    # -- units ------------------------------------------------------------------------------
    def done_units(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM units")}

    def commit_unit(self, unit: str, rows: Iterable[dict[str, Any]] = (),
                    artifacts: Iterable[tuple[str, str, bytes]] = (), wall_s: float = 0.0,
                    cell: tuple[str, int, str] | None = None) -> None:
        """Write a unit's rows and artifacts and mark it done, all or nothing; ``cell``: where it
        ran (process), how often it was sent again after losing its worker, and by which executor."""
        with self._transaction():
            if cell is not None:
                self.conn.execute("INSERT INTO cells VALUES (?, ?, ?, ?, ?)", (unit, cell[0], wall_s, cell[1], cell[2]))
            seq = self.conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM units").fetchone()[0]
            self.conn.execute("INSERT INTO units VALUES (?, ?, ?)", (unit, seq, wall_s))
            self.conn.executemany(
                f"INSERT INTO rows ({', '.join(ROW_FIELDS)}, unit) VALUES ({', '.join('?' * (len(ROW_FIELDS) + 1))})",
                [(*[r.get(k) for k in ROW_FIELDS], unit) for r in rows])
            self.conn.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?)",
                                  [(name, kind, data, unit) for name, kind, data in artifacts])

    def prune(self, keep: set[str]) -> int:
        """Drop units (with their rows and artifacts) that are not in ``keep``: what an earlier
        version planned differently must not show up in this run's report."""
        stale = sorted(self.done_units() - keep)
        with self._transaction():
            for name in stale:
                self.conn.execute("DELETE FROM cells WHERE unit = ?", (name,))
                self.conn.execute("DELETE FROM rows WHERE unit = ?", (name,))
                self.conn.execute("DELETE FROM artifacts WHERE unit = ?", (name,))
                self.conn.execute("DELETE FROM units WHERE name = ?", (name,))
        return len(stale)

    # -- reading ----------------------------------------------------------------------------
    def rows(self, stage: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(ROW_FIELDS)} FROM rows"
        args: tuple[Any, ...] = ()
        if stage is not None:
            sql += " WHERE stage = ?"
            args = (stage,)
        sql += " ORDER BY stage, attack, budget, image"
        return [dict(zip(ROW_FIELDS, r, strict=True)) for r in self.conn.execute(sql, args)]

    def artifact(self, name: str) -> tuple[str, bytes] | None:
        row = self.conn.execute("SELECT kind, data FROM artifacts WHERE name = ?", (name,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def artifacts(self, prefix: str = "") -> list[tuple[str, str, bytes]]:
        q = self.conn.execute("SELECT name, kind, data FROM artifacts WHERE name LIKE ? ORDER BY name",
                              (prefix.replace("%", r"\%") + "%",))
        return [(n, k, bytes(d)) for n, k, d in q]

    def json_artifact(self, name: str) -> Any:
        found = self.artifact(name)
        return None if found is None else json.loads(found[1])

    def cells(self) -> dict[str, dict[str, Any]]:
        """Where each unit ran: unit -> where (host:pid), wall_s, retries, executor. Empty for a
        store written before units recorded it."""
        if self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cells'").fetchone() is None:
            return {}
        return {u: {"where": w, "wall_s": t, "retries": r, "executor": e}
                for u, w, t, r, e in self.conn.execute("SELECT unit, place, wall_s, retries, executor FROM cells")}

    def snapshot(self) -> dict[str, Any]:
        """What the store holds that must not depend on where, when or in how many goes its
        units ran: the rows without their times, the artifacts (JSON and NPZ without their
        ``wall_s``, figures as bytes) and the unit names. Two runs of one audit (in process
        and on workers, or interrupted and resumed) have equal snapshots."""
        rows = [tuple(r[k] for k in ROW_FIELDS if k != "time_s") for r in self.rows()]
        artifacts: dict[str, Any] = {}
        for name, kind, data in self.artifacts():
            if kind == "json":
                obj = json.loads(data)
                if isinstance(obj, dict):
                    obj.pop("wall_s", None)
                artifacts[name] = obj
            elif kind == "npz":
                import io

                import numpy as np

                with np.load(io.BytesIO(data), allow_pickle=False) as f:
                    artifacts[name] = {k: f[k].tolist() for k in f.files if k != "wall_s"}
            else:
                artifacts[name] = data
        return {"rows": rows, "artifacts": artifacts, "units": sorted(self.done_units())}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
