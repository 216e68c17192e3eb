"""The scripts in examples/ run as a user runs them and say what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECT = {
    "audit_from_python.py": "holds every number of the report",
    "wrap_your_model.py": "every command takes it",
    "dicom_round_trip.py": "the ones the attack reported: True",
}


def test_every_example_is_run_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECT)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECT))
def test_example_runs(script: str, tmp_path: Path) -> None:
    if script.startswith("dicom"):
        pytest.importorskip("pydicom")
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert EXPECT[script] in done.stdout
