"""One resume idiom for every run: finished units in the run folder's SQLite store.

A long run is a list of units (a crafted patch, one row of a size sweep, one trained model, one
audit stage on one chunk of images). Each finished unit is committed to OUT/run.sqlite (the same
store the audit keeps in OUT/audit.sqlite: a unit and its artifact are written in one
transaction) under its name and the fingerprint of everything it depends on: inputs, settings,
medfool's version. A rerun asks for each unit by name and fingerprint; a hit is reused, a miss
(another setting, or a run killed before the unit finished) is computed again. Output files are
written from the units, so deleting an output never loses work and an output file is never trusted
as a cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medfool.eval.store import ResultStore
from medfool.utils.io import atomic_write_bytes, json_safe

__all__ = ["LEDGER", "Ledger"]

LEDGER = "run.sqlite"


class Ledger:
    """Finished units of a run, by name and fingerprint. Use as a context manager."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    @classmethod
    def open(cls, folder: Path) -> Ledger:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(ResultStore.open(folder / LEDGER))

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

    @staticmethod
    def _key(unit: str, fingerprint: str) -> str:
        return f"{unit}@{fingerprint}"

    def get(self, unit: str, fingerprint: str) -> bytes | None:
        """The unit's bytes when it finished with this fingerprint, else None."""
        found = self.store.artifact(self._key(unit, fingerprint))
        return None if found is None else found[1]

    def put(self, unit: str, fingerprint: str, data: bytes, kind: str = "bin") -> None:
        """Record a finished unit (a unit already recorded under this fingerprint is kept)."""
        key = self._key(unit, fingerprint)
        if self.store.artifact(key) is None:
            self.store.commit_unit(key, artifacts=[(key, kind, data)])

    def restore(self, unit: str, fingerprint: str, path: Path) -> bool:
        """Whether the unit finished under this fingerprint; if so ``path`` (its output file)
        holds its bytes afterwards, rewritten when it is missing or differs."""
        saved = self.get(unit, fingerprint)
        if saved is None:
            return False
        if not path.is_file() or path.read_bytes() != saved:
            atomic_write_bytes(path, saved)
        return True

    def record(self, unit: str, fingerprint: str, path: Path, kind: str = "bin") -> None:
        """Record a unit whose output the caller has just written to ``path``."""
        self.put(unit, fingerprint, path.read_bytes(), kind)

    def file_unit(self, unit: str, fingerprint: str, path: Path, make: Callable[[Path], None],
                  kind: str = "bin") -> bool:
        """The one get-or-compute for a unit whose output is a file: restored to ``path`` when it
        finished under this fingerprint, else ``make(path)`` writes it and it is recorded.
        Returns whether it was reused."""
        if self.restore(unit, fingerprint, path):
            return True
        make(path)
        self.record(unit, fingerprint, path, kind)
        return False

    def json_unit(self, unit: str, fingerprint: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The one get-or-compute for a unit whose result is a JSON object."""
        saved = self.get(unit, fingerprint)
        if saved is not None:
            result: dict[str, Any] = json.loads(saved)
            return result
        result = compute()
        self.put(unit, fingerprint, json.dumps(json_safe(result)).encode(), "json")
        return result
