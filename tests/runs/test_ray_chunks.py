"""``medfool attack --workers 2`` and ``medfool defend evaluate --workers 2`` write what the
in-process runs write; a worker killed in the middle of a chunk costs a retry and nothing else;
without Ray the attack runs in process and says so."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from medfool.attacks import get_attack
from medfool.attacks.base import AttackResult
from medfool.cli.main import main
from medfool.data import make_synthetic
from medfool.models import load_classifier
from medfool.runs.chunks import InProcessChunks, RayChunks, VictimSpec, attack_chunk, chunks_of


def _arrays(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "adversarial.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_two_ray_workers_write_the_in_process_results(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    common = ["attack", "square", "-m", str(tiny_model), "-d", "synthetic", "--eps", "4/255", "8/255",
              "--queries", "40", "--n", "24", "--batch-size", "5", "--seed", "2", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "here")]) == 0
    assert main([*common, "--workers", "2", "--threads-per-worker", "1", "--out", str(tmp_path / "ray")]) == 0
    a, b = _arrays(tmp_path / "here"), _arrays(tmp_path / "ray")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["success_1"].any()  # the attack did something (a do-nothing attack is equal everywhere too)


@pytest.mark.slow
def test_defend_evaluate_on_two_workers_writes_the_in_process_figures(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    common = ["defend", "evaluate", "-d", "synthetic", "--baseline", str(tiny_model), "-t", "jpeg", "-t", "median",
              "-t", "resize-pad", "--n", "40", "--preset", "fast", "--eot", "2", "--eps", "8/255", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "here")]) == 0
    assert main([*common, "--workers", "2", "--threads-per-worker", "1", "--out", str(tmp_path / "ray")]) == 0
    a, b = (json.loads((tmp_path / d / "defence.json").read_text()) for d in ("here", "ray"))
    for x in (a, b):
        x.pop("environment", None)
        for d in x["defences"]:
            d.pop("cost")
    assert a == b
    rows = [r for d in a["defences"] for r in d["rows"]]
    assert any(r["naive"] > r["adaptive"] for r in rows)  # the attackers did something (JPEG masks, BPDA breaks)


@pytest.mark.slow
def test_a_worker_killed_in_a_chunk_costs_a_retry_and_nothing_else(tiny_model: Path) -> None:
    pytest.importorskip("ray")
    model, _ = load_classifier(str(tiny_model))
    x, y = make_synthetic(seed=0).split("test").get(list(range(24)))
    attack = get_attack("square", eps=8 / 255, queries=200)
    chunks = chunks_of(x, y, None, torch.arange(24), 3)  # 8 chunks: both workers stay busy after the first
    work = partial(attack_chunk, attack)
    here = InProcessChunks(models={"m": model})
    want = AttackResult.concat(here.run(work, "m", chunks, 1, "here"))
    killed: list[int] = []

    def kill_one(pids: list[int]) -> None:
        def later() -> None:  # once a chunk is back, the workers are in the next ones
            deadline = time.monotonic() + 300
            while runner.finished < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        threading.Thread(target=later, daemon=True).start()

    runner = RayChunks(workers=2, threads=1, on_start=kill_one)
    with runner:
        runner.register("m", VictimSpec(str(tiny_model)))
        got = AttackResult.concat(runner.run(work, "m", chunks, 1, "ray"))
    assert killed, "no worker was killed"
    assert runner.retries >= 1, "no chunk was lost with its worker"
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.success, want.success)
    assert torch.equal(got.queries, want.queries)  # nothing counted twice
    assert bool(want.success.any())


def test_without_ray_the_attack_runs_in_process_and_says_so(tiny_model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["attack", "fgsm", "-m", str(tiny_model), "-d", "synthetic", "--eps", "8/255", "--n", "8",
                 "--workers", "2", "--device", "cpu", "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    assert "note: Ray is not installed (pip install 'medfool[ray]'): running in this process" in said
    assert (tmp_path / "a" / "results.json").exists()
