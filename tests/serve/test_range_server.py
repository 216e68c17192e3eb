"""``medfool range serve`` as a process on loopback: it answers over real HTTP, and a SIGKILL
loses no query it acknowledged."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest


@pytest.mark.slow
def test_acknowledged_queries_survive_a_sigkill(tiny_model: Path, tmp_path: Path, range_process) -> None:
    key = "k" * 20
    proc, port = range_process(tiny_model, tmp_path / "range", key)
    try:
        url = f"http://127.0.0.1:{port}"
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(0).random((3, 28, 28)).astype(np.float32))
        answered = 0
        for _ in range(7):
            r = httpx.post(f"{url}/model/predict", files={"image": ("x.npy", buf.getvalue())},
                           headers={"X-API-Key": key}, timeout=30)
            assert r.status_code == 200, r.text
            answered += 1
        assert httpx.post(f"{url}/model/predict", files={"image": ("x.npy", buf.getvalue())}, timeout=30
                          ).status_code == 401
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    with sqlite3.connect(tmp_path / "range" / "queries.sqlite") as db:
        assert db.execute("SELECT count(*) FROM queries").fetchone()[0] == answered


@pytest.mark.parametrize(("extra", "pattern"), [
    ([], "give exactly one of --keys FILE and --api-key KEY"),
    (["--api-key", "short"], "--api-key: use at least 16 characters"),
    (["--keys", "missing.jsonl"], r"missing\.jsonl: no key file here"),
    (["--keys", "bad.jsonl"], r"bad\.jsonl, line 1: not a key record"),
])
def test_serve_refuses_bad_keys_in_one_line(extra: list[str], pattern: str, tiny_model: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, fails_cleanly) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    fails_cleanly(["range", "serve", "-m", str(tiny_model), *extra, "--out", str(tmp_path / "r")], pattern)
