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
