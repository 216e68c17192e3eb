"""Load on the range, loopback only, bounded in count and time: N concurrent clients against
``medfool range serve``, latency percentiles, throughput, errors, and the in-process model's
throughput beside it (the serving overhead).

Usage:  python benchmarks/range_load.py --model runs/pneu-s0 [--clients 8] [--requests 100]
        [--batch 1 16] [--detector none blacklight] [--json OUT]
        (writes benchmarks/results/range_load_MODEL.json unless --json names another file)

Each configuration starts a fresh server process (no rate limit, no daily budget), waits until it
is ready, then runs ``--clients`` threads, each with its own HTTP connection, sending
``--requests`` KServe v2 requests of ``--batch`` images (random pixels, a new image every
request so that no detector sees exact repeats), and stops after ``--limit`` seconds whatever
is left. The in-process figure is ``Classifier.probabilities`` on batches of the same size, one
thread of calls, the same torch threads as the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from medfool.models import load_classifier
from record import slug, write_results

KEY = "load-test-key-0123456789"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(model: str, detector: str, out: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    cmd = [shutil.which("medfool") or "medfool", "range", "serve", "-m", model, "--api-key", KEY, "--port", str(port),
           "--device", "cpu", "--out", str(out), "--rate", "1000000", "--burst", "1000000", "--daily", "0"]
    if detector != "none":
        cmd += ["--detector", detector, "--on-detect", "flag"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 180 s")


def load(url: str, shape: tuple[int, ...], clients: int, requests: int, batch: int, limit: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + limit

    def client(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with httpx.Client(timeout=60, headers={"X-API-Key": KEY}) as http:
            for _ in range(requests):
                if time.monotonic() > stop:
                    return
                x = torch.rand((batch, *shape), generator=gen)
                body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                                               "data": x.flatten().tolist()}]})
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{url}/v2/models/medfool/infer", content=body)
                    ok = r.status_code == 200
                    why = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt) if ok else errors.append(why))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    qs = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"requests_ok": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "wall_s": wall, "p50_ms": 1000 * qs[49], "p99_ms": 1000 * qs[98],
            "requests_per_s": len(latencies) / wall, "images_per_s": len(latencies) * batch / wall}


def in_process(model_path: str, batch: int, seconds: float = 5.0) -> float:
    model, _ = load_classifier(model_path)
    x = torch.rand((batch, *model.meta.input_shape))
    with torch.no_grad():
        model.probabilities(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.probabilities(x)
            n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--detector", nargs="+", default=["none", "blacklight"])
    ap.add_argument("--limit", type=float, default=120.0, help="seconds per configuration at most")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shape = tuple(load_classifier(args.model)[0].meta.input_shape)
    rows = []
    for detector in args.detector:
        for batch in args.batch:
            with tempfile.TemporaryDirectory() as tmp:
                proc, url = serve(args.model, detector, Path(tmp))
                try:
                    got = load(url, shape, args.clients, args.requests, batch, args.limit)
                finally:
                    proc.kill()
                    proc.wait()
            local = in_process(args.model, batch)
            row = {"detector": detector, "batch": batch, "clients": args.clients, **got,
                   "in_process_images_per_s": local, "overhead_ratio": local / got["images_per_s"]}
            rows.append(row)
            print(f"{detector}, batch {batch}: {got['requests_ok']} ok, {got['errors']} errors, p50 "
                  f"{got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms, {got['images_per_s']:.0f} images/s served vs "
                  f"{local:.0f} in process (x{row['overhead_ratio']:.1f})", flush=True)
    write_results(f"range_load_{slug(Path(args.model).name)}", {
        "model": args.model, "torch_threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
        "rows": rows}, args.json)


if __name__ == "__main__":
    main()
