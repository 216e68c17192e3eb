"""A Ray worker of an audit: it loads the model and the data once, rebuilds the audit's plan
(a pure function of the model file, the data and the config, so it finds the driver's units
under the same names) and runs the units it is sent by name."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.runs.audit.cells import Done, WorkerSpec, run_unit
from medfool.runs.audit.runner import audit_images, patch_target, plan
from medfool.runs.audit.units import Unit
from medfool.runs.common import match_model_to_data

__all__ = ["AuditWorker", "plan_for_worker"]


def plan_for_worker(spec: WorkerSpec, patch_bytes: Callable[[], bytes]) -> list[Unit]:
    """The audit's units as the driver planned them (the backdoor unit, which writes in the
    run's folder, is the driver's own and not planned here)."""
    model, _ = load_classifier(spec.model, device=spec.device)
    dataset = spec.data.load()
    match_model_to_data(model, dataset, spec.model)
    ids, x, y = audit_images(dataset, spec.cfg)
    x, y = x.to(model.device), y.to(model.device)
    units, _ = plan(model, dataset, spec.cfg, ids, x, y, patch_bytes, patch_target(dataset.info, spec.cfg, model))
    return units


class AuditWorker:
    """A Ray actor: loads the model and data once, plans the audit, runs units by name."""

    def __init__(self, spec: WorkerSpec) -> None:
        torch.set_num_threads(spec.threads)  # N workers never oversubscribe the cores
        self.patch: bytes | None = None
        self.seed = spec.cfg.seed
        self.units = {u.name: u for u in plan_for_worker(spec, self.patch_bytes)}

    def patch_bytes(self) -> bytes:
        if self.patch is None:
            raise ConfigError("a patch unit reached a worker without the crafted patch")
        return self.patch

    def run(self, name: str, needed: bytes | None) -> Done:
        """Run a unit; ``needed`` is the artifact its ``needs`` names (the crafted patch)."""
        if name not in self.units:
            raise ConfigError(f"unit {name} is not in the worker's plan: the worker sees other data or settings")
        self.patch = needed
        return run_unit(self.units[name], self.seed)

    def pid(self) -> int:
        return os.getpid()
