"""Where an audit's units (its cells) run, and what a run needs to say about each.

A unit is a stage on one chunk of images whose randomness comes from its own seed, so it
computes the same rows wherever it runs. A worker rebuilds the audit's plan from the same
model file, data and config (the plan is a pure function of them) and runs the units it is
sent by name; the driver alone writes the store, one transaction per unit, so a unit retried
after a lost worker is written once, and a killed driver resumes with the units it has.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from medfool.eval.store import unit_seed
from medfool.runs.audit.config import AuditConfig
from medfool.runs.audit.units import Artifact, Unit
from medfool.runs.common import DataSource

__all__ = ["Commit", "Done", "Executor", "InProcess", "Started", "WorkerSpec", "run_unit"]


@dataclass
class Done:
    """A unit's result as the driver commits it, with where it ran, its time and its retries."""

    name: str
    rows: list[dict[str, Any]]
    artifacts: list[Artifact]
    wall_s: float
    worker: str
    retries: int = 0


def here() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_unit(unit: Unit, seed: int) -> Done:
    """Run one unit with its own random streams (the same in every process)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(unit_seed(seed, unit.name))
    torch.manual_seed(unit_seed(seed, unit.name))  # for any library code using the global RNG
    rows, artifacts = unit.run(gen)
    return Done(unit.name, list(rows), list(artifacts), time.perf_counter() - start, here())


Commit = Callable[[Done], None]
Started = Callable[[Unit], None]


class Executor(Protocol):
    """Runs units, says when each starts and hands each result to ``commit`` as it comes (in
    the driver's process, which alone writes the store)."""

    @property
    def where(self) -> str: ...

    def run(self, units: Sequence[Unit], seed: int, started: Started, commit: Commit,
            artifact: Callable[[str], bytes]) -> None:
        """``artifact`` reads a committed unit's artifact (what a unit's ``needs`` names)."""


class InProcess:
    """Every unit in this process, in plan order (the default)."""

    where = "in process"

    def run(self, units: Sequence[Unit], seed: int, started: Started, commit: Commit,
            artifact: Callable[[str], bytes]) -> None:
        for unit in units:
            started(unit)
            commit(run_unit(unit, seed))


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the audit's plan: the model file, the data and the config.
    ``patch`` is filled in by the driver for the units that apply the crafted patch."""

    model: str
    data: DataSource
    cfg: AuditConfig
    device: str
    threads: int
