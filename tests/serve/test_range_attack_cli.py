"""``medfool attack`` against ``medfool range serve`` as processes: the run survives the server
being killed with SIGKILL and restarted, the log keeps every query it acknowledged, and
``medfool range report`` sets the defender's view beside the attacker's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

MEDFOOL = shutil.which("medfool") or "medfool"
KEY = "r" * 24


def _serve(start, model: Path, out: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    return start(model, out, KEY, "--rate", "500", "--burst", "500", "--detector", "blacklight",
                 "--on-detect", "flag", port=port)


def _rows(out: Path, run: str) -> int:
    with sqlite3.connect(out / "queries.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM queries WHERE run = ?", (run,)).fetchone()[0])


@pytest.mark.slow
def test_attack_survives_a_killed_server_and_the_report_accounts(tiny_model: Path, tmp_path: Path,
                                                                   range_process) -> None:
    served = tmp_path / "range"
    server, port = _serve(range_process, tiny_model, served)
    env = {**os.environ, "MEDFOOL_API_KEY": KEY}
    attack = subprocess.Popen([MEDFOOL, "attack", "square", "-m", f"http://127.0.0.1:{port}", "-d", "synthetic",
                               "--n", "8", "--queries", "400", "--eps", "4/255", "--device", "cpu",
                               "--out", str(tmp_path / "sq"), "--seed", "1", "--run-id", "sq"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while _rows(served, "sq") < 200:  # the attack is under way
            assert attack.poll() is None and time.monotonic() < deadline, "the attack ended before the kill"
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        before = _rows(served, "sq")
        time.sleep(1.0)
        server, _ = _serve(range_process, tiny_model, served, port=port)
        out, _ = attack.communicate(timeout=300)
    finally:
        if attack.poll() is None:
            attack.kill()
    text = out.decode()
    assert attack.returncode == 0, text
    res = json.loads((tmp_path / "sq" / "results.json").read_text())
    client = res["range"]
    assert client["reconnects"] >= 1  # it waited for the server to come back
    counted = sum(i["queries"] for i in res["images"])
    logged = _rows(served, "sq")
    assert logged >= before > 0
    # every answer the attack got is in the log; at most the one request in flight at the kill was
    # committed without its answer arriving (then sent again)
    assert client["answered"] == counted <= logged <= counted + 8
    assert "KEY" not in json.dumps(res["command"]) and KEY not in json.dumps(res)
    report = subprocess.run([MEDFOOL, "range", "report", str(served), "--runs", str(tmp_path / "sq"),
                             "--json", str(tmp_path / "report.json")], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    (run,) = json.loads((tmp_path / "report.json").read_text())["runs"]
    assert run["run"] == "sq" and run["queries"] == logged
    assert run["noticed_after"] is not None and run["noticed_after"] <= 50  # Square is noticed by Blacklight
    assert run["attack"]["queries_counted_by_attack"] == counted
    assert "sq |" in report.stdout
