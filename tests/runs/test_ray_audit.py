"""An audit on Ray workers writes the store an in-process audit writes, row for row (times
excluded); a worker killed in the middle of a unit costs a retry and nothing else; without Ray
the audit runs in process and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_resume import _differences, _snapshot, _units

from medfool.data import make_synthetic
from medfool.models import save_checkpoint
from medfool.models.train import TrainConfig, fit
from medfool.runs.audit.cells import InProcess, WorkerSpec
from medfool.runs.audit.config import load_config
from medfool.runs.audit.job import AuditJob, audit
from medfool.runs.common import DataSource
from medfool.vocab import BINARY

# every kind of unit (a chunked attack, a patch applied after it is crafted, maps), small
CONFIG = """\
n = 16
batch_size = 4
[corruptions]
severities = [2]
[whitebox]
ensemble = "fast"
eps = [4]
steps = 3
[blackbox]
queries = 5
[patch]
steps = 10
n_craft = 16
[onepixel]
pixels = [1]
n = 4
population = 10
generations = 2
[maps]
n = 1
samples = 0
"""


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The shared 3-class model on the synthetic set and a binary one on a binary .npz (model, dataset)."""
    tmp = tmp_path_factory.mktemp("ray-models")
    binary_ds = make_synthetic(seed=1, task=BINARY)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        x, y = binary_ds.split(split).get(list(range(len(binary_ds.split(split)))))
        arrays[f"{split}_images"] = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        arrays[f"{split}_labels"] = y.numpy().astype(np.uint8).reshape(-1, 1)
    np.savez_compressed(tmp / "binary.npz", **arrays)  # type: ignore[arg-type]
    from medfool.data import load_dataset

    binary = fit(load_dataset(str(tmp / "binary.npz")),
                 TrainConfig(arch_kwargs={"width": 4}, epochs=2, batch_size=64, lr=1e-2))
    return {"multi-class": (tiny_model, "synthetic"),
            "binary": (save_checkpoint(binary.model, tmp / "binary.safetensors", binary.record),
                       str(tmp / "binary.npz"))}


def _job(model: Path, dataset: str, cfg: Path, out: Path, workers: int | None) -> AuditJob:
    return AuditJob(model=str(model), data=DataSource(dataset, allow_download=False), out=out, config=str(cfg),
                    workers=workers)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multi-class", "binary"])
def test_two_ray_workers_write_the_in_process_store(task: str, models: dict[str, tuple[Path, str]],
                                                    tmp_path: Path) -> None:
    pytest.importorskip("ray")
    model, dataset = models[task]
    cfg = tmp_path / "audit.toml"
    cfg.write_text(CONFIG)
    said: list[str] = []
    audit(_job(model, dataset, cfg, tmp_path / "in-process", None), said.append)
    audit(_job(model, dataset, cfg, tmp_path / "ray", 2), said.append)
    assert any("on 2 Ray workers" in line for line in said), said
    a, b = _snapshot(tmp_path / "in-process"), _snapshot(tmp_path / "ray")
    assert a == b, _differences(a, b)
    assert len(a["units"]) > 10  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_worker_killed_in_a_unit_costs_a_retry_and_nothing_else(models: dict[str, tuple[Path, str]],
                                                                   tmp_path: Path) -> None:
    """The workers are SIGKILLed by process id while they run units; the lost units are sent
    again, each unit is written once, and the store equals the in-process one."""
    pytest.importorskip("ray")
    from medfool.runs.audit.ray_pool import RayWorkers
    from medfool.runs.audit.runner import run_audit

    model, dataset = models["multi-class"]
    cfg_file = tmp_path / "audit.toml"
    cfg_file.write_text(CONFIG)
    audit(_job(model, dataset, cfg_file, tmp_path / "in-process", None), lambda _: None)

    from medfool.models import load_classifier

    cfg = load_config(str(cfg_file))
    data = DataSource(dataset, allow_download=False)
    executor = RayWorkers(WorkerSpec(str(model), data, cfg, "cpu", 1), workers=2)
    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_once_busy() -> None:
        deadline = time.monotonic() + 300
        while _units(out) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in list(executor.pids):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_once_busy, daemon=True)
    killer.start()
    victim, _ = load_classifier(str(model))
    run_audit(victim, str(model), data.load(), cfg, out, executor=executor, say=lambda _: None)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    a, b = _snapshot(tmp_path / "in-process"), _snapshot(out)
    assert a == b, _differences(a, b)
    from medfool.eval.store import ResultStore

    with ResultStore.open(out / "audit.sqlite", readonly=True) as store:
        cells = store.cells()
    assert sum(c["retries"] for c in cells.values()) >= 1, "no unit was lost with its worker"
    assert {c["where"].split(":")[1] for c in cells.values()} - {str(p) for p in killed}


@pytest.mark.slow
def test_a_killed_driver_resumes_with_the_units_it_had(models: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    model, dataset = models["multi-class"]
    cfg = tmp_path / "audit.toml"
    cfg.write_text(CONFIG)
    audit(_job(model, dataset, cfg, tmp_path / "in-process", None), lambda _: None)
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "medfool.cli.main", "audit", "-m", str(model), "-d", dataset, "--config", str(cfg),
           "--out", str(out), "--workers", "2"]
    env = {**os.environ, "MEDFOOL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and _units(out) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the audit finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    had = _units(out)
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    assert f"resuming: {had} of " in done.stdout
    a, b = _snapshot(tmp_path / "in-process"), _snapshot(out)
    assert a == b, _differences(a, b)


def test_without_ray_the_audit_runs_in_process_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfool.runs.audit.ray_pool import choose_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    said: list[str] = []
    spec = WorkerSpec("model.safetensors", DataSource("synthetic"), load_config(None), "cpu", 1)
    executor = choose_executor(2, None, spec, said.append)
    assert isinstance(executor, InProcess)
    assert said == ["note: Ray is not installed (pip install 'medfool[ray]'): running in this process"]
