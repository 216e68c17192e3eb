"""Kill-and-resume: an audit SIGKILLed at any moment and started again ends with the same
store as an uninterrupted run with the same seed (no row lost, none duplicated)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

# many small units, so that a kill lands in the middle of the audit
CONFIG = """\
n = 24
batch_size = 4
[corruptions]
severities = [1, 3]
[whitebox]
ensemble = "fast"
eps = [1, 4, 16]
steps = 5
[blackbox]
queries = 5
[patch]
steps = 15
n_craft = 32
[onepixel]
pixels = [1, 2]
n = 12
population = 30
generations = 4
[maps]
n = 2
samples = 2
"""


def _cmd(model: Path, cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "medfool.cli.main", "audit", "-m", str(model), "-d", "synthetic",
            "--config", str(cfg), "--out", str(out)]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "MEDFOOL_PROGRESS": "0", "XDG_CACHE_HOME": str(tmp / "cache")}


def _units(out: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{out / 'audit.sqlite'}?mode=ro", uri=True, timeout=0.1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM units").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _snapshot(out: Path) -> dict[str, object]:
    """The store's content that must not depend on interruptions (timings excluded)."""
    from medfool.eval.store import ResultStore

    with ResultStore.open(out / "audit.sqlite", readonly=True) as store:
        return store.snapshot()


def _differences(a: dict[str, object], b: dict[str, object], limit: int = 20) -> str:
    """What differs between two snapshots, one line each (a full dict diff is too long to read)."""
    out: list[str] = []
    rows_a = {r[:4]: r for r in a["rows"]}  # type: ignore[attr-defined]
    rows_b = {r[:4]: r for r in b["rows"]}  # type: ignore[attr-defined]
    for key in sorted(rows_a.keys() | rows_b.keys()):
        if rows_a.get(key) != rows_b.get(key):
            out.append(f"row {key}: {rows_a.get(key)} != {rows_b.get(key)}")
    arts_a, arts_b = a["artifacts"], b["artifacts"]
    for name in sorted(arts_a.keys() | arts_b.keys()):  # type: ignore[attr-defined]
        if arts_a.get(name) != arts_b.get(name):  # type: ignore[attr-defined]
            out.append(f"artifact {name} differs")
    units_a, units_b = set(a["units"]), set(b["units"])  # type: ignore[call-overload]
    out += [f"unit {u} only in the uninterrupted run" for u in sorted(units_a - units_b)]
    out += [f"unit {u} only in the resumed run" for u in sorted(units_b - units_a)]
    more = f"\n... and {len(out) - limit} more" if len(out) > limit else ""
    return "\n".join(out[:limit]) + more


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tiny_model: Path, tmp_path: Path):
    cfg = tmp_path / "audit.toml"
    cfg.write_text(CONFIG)
    full = tmp_path / "full"
    subprocess.run(_cmd(tiny_model, cfg, full), env=_env(tmp_path), check=True, capture_output=True)
    total = len(_snapshot(full)["units"])

    killed = tmp_path / "killed"
    kills = 0
    for fraction in (0.25, 0.6):  # two interruptions at different stages
        proc = subprocess.Popen(_cmd(tiny_model, cfg, killed), env=_env(tmp_path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _units(killed) < fraction * total and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert 0 < _units(killed) < total or proc.returncode == 0
    assert kills >= 1, "the audit finished before it could be interrupted"
    assert _units(killed) < total
    done = subprocess.run(_cmd(tiny_model, cfg, killed), env=_env(tmp_path), check=True, capture_output=True,
                          text=True)
    assert "resuming:" in done.stdout
    resumed, uninterrupted = _snapshot(killed), _snapshot(full)
    assert resumed == uninterrupted, _differences(uninterrupted, resumed)
    assert (killed / "report.html").is_file()
