"""``medfool range serve`` as a process on loopback: it answers over real HTTP, and a SIGKILL
loses no query it acknowledged."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

MEDFOOL = shutil.which("medfool") or "medfool"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_acknowledged_queries_survive_a_sigkill(tiny_model: Path, tmp_path: Path) -> None:
    port = _free_port()
    key = "k" * 20
    proc = subprocess.Popen([MEDFOOL, "range", "serve", "-m", str(tiny_model), "--api-key", key, "--port", str(port),
                             "--device", "cpu", "--out", str(tmp_path / "range")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            time.sleep(0.2)
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
