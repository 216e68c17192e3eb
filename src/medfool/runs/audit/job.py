"""``medfool audit`` and ``medfool report`` as runs: everything is checked before anything is
written, then the audit runs (or resumes) and its findings are reported line by line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfool.errors import ConfigError
from medfool.eval.store import ResultStore
from medfool.models import load_classifier
from medfool.report.html import render
from medfool.runs.audit.cells import WorkerSpec
from medfool.runs.audit.config import load_config
from medfool.runs.audit.ray_pool import choose_executor
from medfool.runs.audit.runner import STORE, estimate_audit, run_audit
from medfool.runs.common import DataSource, Say, check_writable, match_model_to_data, to_log
from medfool.runs.ray_start import threads_per_worker
from medfool.utils.device import resolve_device
from medfool.vocab import Device

__all__ = ["AuditJob", "audit", "rerender"]


@dataclass(frozen=True)
class AuditJob:
    """Everything ``medfool audit`` needs; ``seed`` and ``n`` (None: the config's) override the
    config file's."""

    model: str
    data: DataSource
    out: Path
    config: str | None = None
    seed: int | None = None
    n: int | None = None
    device: Device = "auto"
    fresh: bool = False
    defences: tuple[str, ...] = ()  # added to the config's [defence] names
    command: dict[str, Any] = field(default_factory=dict)
    estimate: bool = False  # say what the audit would cost and stop, writing nothing
    workers: int | None = None  # run the units on this many Ray workers (None: in this process)
    ray_address: str | None = None  # join this Ray cluster instead of starting a local instance
    worker_threads: int | None = None  # torch threads per worker (None: the cores shared out)


def audit(job: AuditJob, say: Say = to_log) -> Path | None:
    """Run (or resume) the audit; returns the report's path (None for an estimate)."""
    cfg = load_config(job.config, seed=job.seed, n=job.n, defences=list(job.defences))
    if not job.estimate:
        check_writable(job.out)
    device = resolve_device(job.device)
    model, _ = load_classifier(job.model, device=device)
    dataset = job.data.load()
    match_model_to_data(model, dataset, job.model)
    if job.estimate:
        say(f"audit of {job.model} on {dataset.info.name}: {cfg.n} {cfg.split} images, seed {cfg.seed}")
        estimate_audit(model, dataset, cfg, say)
        return None
    say(f"auditing {job.model} on {dataset.info.name}: {cfg.n} {cfg.split} images, seed {cfg.seed} -> {job.out}/")
    workers = job.workers or (1 if job.ray_address else None)
    spec = WorkerSpec(job.model, job.data, cfg, str(device), job.worker_threads or threads_per_worker(workers or 1))
    executor = choose_executor(workers, job.ray_address, spec, say)
    report = run_audit(model, job.model, dataset, cfg, job.out, fresh=job.fresh, command=job.command,
                       executor=executor, say=say)
    findings(report, say)
    return report


def rerender(folder: Path, say: Say = to_log) -> Path:
    """Write an audit's report and results.json again from its store (no recomputation)."""
    check_writable(folder)
    with ResultStore.open(folder / STORE, readonly=True) as store:
        if store.get_meta("fingerprint") is None:
            raise ConfigError(f"{folder / STORE}: the audit never started properly; rerun 'medfool audit'")
        report = render(store, folder)  # reads everything before it writes anything
    findings(report, say)
    return report


def findings(report: Path, say: Say) -> None:
    """The report's findings, one line each, and where the report is."""
    data = json.loads((report.parent / "results.json").read_text())
    for line in data["findings"]:
        say(f"  - {line}")
    say(f"report: {report}")
