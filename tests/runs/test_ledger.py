"""The one resume idiom: finished units by name and fingerprint."""

from __future__ import annotations

from pathlib import Path

from medfool.runs.ledger import LEDGER, Ledger


def test_a_unit_is_found_only_under_its_own_fingerprint(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "run") as ledger:
        assert ledger.get("patch", "fp1") is None
        ledger.put("patch", "fp1", b"one")
        ledger.put("patch", "fp1", b"ignored: already finished")
        ledger.put("patch", "fp2", b"two")
    assert (tmp_path / "run" / LEDGER).is_file()
    with Ledger.open(tmp_path / "run") as ledger:  # a rerun reads what the first run finished
        assert ledger.get("patch", "fp1") == b"one" and ledger.get("patch", "fp2") == b"two"
        assert ledger.get("patch", "fp3") is None and ledger.get("sweep/0.1", "fp1") is None
