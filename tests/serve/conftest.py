"""A range served on loopback in a thread, for tests that talk HTTP to it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from medfool.defences.stateful import StatefulDetector
from medfool.models import Classifier, load_classifier
from medfool.serve.app import Answer, OnDetect, create_app
from medfool.serve.keys import KeyStore, new_key
from medfool.serve.limits import Limits
from medfool.serve.querylog import QueryLog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, url: str, keys: list[str], log: QueryLog) -> None:
        self.url, self.keys, self.log = url, keys, log


@contextmanager
def serving(model_path: Path | Classifier, folder: Path, *, n_keys: int = 1, limits: Limits | None = None,
            detector: StatefulDetector | None = None, on_detect: OnDetect = "reject",
            answer: Answer = "probs") -> Iterator[Served]:
    import uvicorn

    model = model_path if isinstance(model_path, Classifier) else load_classifier(str(model_path))[0]
    keys, records = zip(*(new_key(f"k{i}") for i in range(n_keys)), strict=True)
    log = QueryLog(folder / "queries.sqlite")
    app = create_app(model, KeyStore(list(records)), limits or Limits(1e6, 10**6, 0), log, detector=detector,
                     on_detect=on_detect, answer=answer)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the range did not start in 20 s")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", list(keys), log)
    finally:
        server.should_exit = True
        thread.join(10)
        log.close()


@pytest.fixture
def serve_range(tmp_path: Path) -> Callable[..., object]:
    """``with serve_range(model_path, **options) as served:`` a range on a free loopback port."""
    def start(model_path: Path, **options: object) -> object:
        return serving(model_path, tmp_path, **options)  # type: ignore[arg-type]
    return start


@pytest.fixture
def range_process() -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], int]]]:
    """``start(model, out, key, *extra, port=None)``: ``medfool range serve`` as its own process
    on loopback, returned once it answers ``/v2/health/ready``; killed at the end if still up."""
    import httpx

    started: list[subprocess.Popen[bytes]] = []

    def start(model: Path, out: Path, key: str, *extra: str,
              port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
        port = port or free_port()
        proc = subprocess.Popen([shutil.which("medfool") or "medfool", "range", "serve", "-m", str(model),
                                 "--api-key", key, "--port", str(port), "--device", "cpu", "--out", str(out),
                                 *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    return proc, port
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            time.sleep(0.2)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
