"""``medfool train --workers 2`` and ``medfool defend adv-train --workers 2`` train on Ray Train
and write what a one-process run writes; without Ray Train they train in process and say so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medfool.cli.main import main
from medfool.models import load_classifier
from medfool.runs.train import choose_spread
from medfool.runs.train_ray import Spread

MEDFOOL = [shutil.which("medfool") or "medfool"]


@pytest.mark.slow
def test_two_workers_write_a_model_and_its_record(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = ["defend", "adv-train", "--method", "fgsm-rs", "--val-images", "32"]
    done = subprocess.run([*MEDFOOL, *command, "-d", "synthetic", "--epochs", "2", "--workers", "2",
                           "--threads-per-worker", "1", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data-parallel on 2 Ray workers (1 thread each)" in done.stdout
    record = json.loads((out / "metrics.json").read_text())
    assert record["data_parallel"]["workers"] == 2
    assert len(record["history"]) == 2  # both epochs reached the driver's record
    assert "epoch 2" in done.stderr  # worker 0's epoch lines reach the driver's log
    model, _ = load_classifier(out / "model.safetensors")
    assert record["metrics"]["test"]["accuracy"] > 0.6  # learnt (3 classes: 1/3 by chance)
    assert model.meta.num_outputs == 3
    assert not (out / ".ray-train").exists()  # Ray Train's run folder is cleaned up


@pytest.mark.parametrize("command", [["train"], ["defend", "adv-train", "--method", "noise"]])
def test_workers_reach_ray_train_from_both_commands(command: list[str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The options reach the data-parallel path (the path itself runs in the test above)."""
    import medfool.runs.train as train

    seen: list[Spread] = []

    def fake(data: object, cfg: object, out: Path, spread: Spread, objective: object = None,
             say: object = None) -> dict[str, object]:
        seen.append(spread)
        raise SystemExit(0)

    monkeypatch.setattr(train, "train_on_ray", fake)
    with pytest.raises(SystemExit):
        main([*command, "-d", "synthetic", "--workers", "2", "--threads-per-worker", "1", "--device", "cpu",
              "--out", str(tmp_path / "r")])
    assert seen == [Spread(2, None, "cpu", 1)]


def test_without_ray_train_it_trains_in_process_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray.train", None)  # import ray.train raises ImportError
    said: list[str] = []
    assert choose_spread(2, None, None, "cpu", said.append) is None
    assert said == ["note: Ray Train is not installed (pip install 'medfool[ray]'): training in this process"]


def test_no_workers_asked_trains_in_process() -> None:
    said: list[str] = []
    assert choose_spread(None, None, None, "cpu", said.append) is None
    assert said == []
    spread = choose_spread(2, None, 1, "cpu", said.append)
    assert spread is not None and (spread.workers, spread.threads, spread.device) == (2, 1, "cpu")


def test_a_workers_failure_ends_in_one_line() -> None:
    """Ray's message carries the remote tracebacks: a worker's own medfool error is raised as it
    is, anything else as one line naming the worker."""
    from medfool.errors import ConfigError
    from medfool.runs.train_ray import _failure

    class WorkersFailed(Exception):
        def __init__(self, failures: dict[int, BaseException]) -> None:
            super().__init__("Training failed due to worker errors:\nTraceback (most recent call last):\n  ...")
            self.worker_failures = failures

    own = ConfigError("pneumoniamnist: file not found on this node")
    assert _failure(WorkersFailed({1: own, 0: RuntimeError("x")})) is not own  # worker 0 first
    assert _failure(WorkersFailed({1: own})) is own
    bug = _failure(WorkersFailed({0: RuntimeError("Traceback ...\n  File x\nZeroDivisionError: division by zero")}))
    assert str(bug) == "data-parallel training failed on worker 0: ZeroDivisionError: division by zero"


@pytest.mark.slow
def test_workers_ray_cannot_place_are_refused_not_awaited() -> None:
    pytest.importorskip("ray")
    import ray

    from medfool.errors import ConfigError
    from medfool.runs.ray_start import start_ray

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    with pytest.raises(ConfigError, match=r"^64 workers need 64 CPUs and 64 GPUs; Ray has 64 CPUs and \d+ GPUs"):
        start_ray(None, 64, 1, "cuda")
    assert not ray.is_initialized()  # the instance it started is shut down again
