"""Training a model and saving it with its record: ``medfool train``, the demo and the
poisoning experiments share this step."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medfool.data.dataset import Dataset
from medfool.errors import ConfigError
from medfool.models import architectures, save_checkpoint
from medfool.models.classifier import Classifier
from medfool.models.train import Objective, TrainConfig, fit
from medfool.runs.common import DataSource, Say, check_writable, log_epoch, to_log
from medfool.runs.ray_start import threads_per_worker
from medfool.runs.train_ray import Spread, train_on_ray
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json
from medfool.vocab import Device

__all__ = ["TrainJob", "choose_spread", "run_train", "train_and_save"]

log = logging.getLogger("medfool")


def train_and_save(dataset: Dataset, cfg: TrainConfig, out: Path, device: torch.device,
                   objective: Objective | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Train with the normal training code (``objective``: a defence's training loss), then
    write OUT/model.safetensors and OUT/metrics.json."""
    result = fit(dataset, cfg, device=device, on_epoch=log_epoch, objective=objective)
    ckpt = save_checkpoint(result.model, out / "model.safetensors", result.record)
    atomic_write_json(out / "metrics.json", result.record)
    log.info("wrote %s and %s", ckpt, out / "metrics.json")
    return result.model, result.record


@dataclass(frozen=True)
class TrainJob:
    """``medfool train``: the data, the training settings and where the run goes (None:
    runs/DATASET-ARCH-seedN)."""

    data: DataSource
    train: TrainConfig
    out: Path | None = None
    device: Device = "auto"
    spread: Spread | None = None  # data-parallel on Ray workers


def choose_spread(workers: int | None, address: str | None, threads: int | None, device: Device,
                  say: Say) -> Spread | None:
    """Data-parallel on Ray when ``workers`` or ``address`` asks for it and Ray Train is
    installed; otherwise None (with a note when it was asked for): the run trains in this process."""
    if not workers and not address:
        return None
    try:
        import ray.train  # noqa: F401
    except ImportError:
        say("note: Ray Train is not installed (pip install 'medfool[ray]'): training in this process")
        return None
    n = workers or 1
    per = threads or threads_per_worker(n)
    return Spread(n, address, resolve_device(device).type, per)


def train_job(data: DataSource, dataset: Dataset, cfg: TrainConfig, out: Path, device: torch.device,
              spread: Spread | None, objective: Objective | None = None, say: Say = to_log) -> dict[str, Any]:
    """Train in this process or on Ray workers; either way OUT/model.safetensors and
    OUT/metrics.json are written, and the training record returned."""
    if spread is None:
        return train_and_save(dataset, cfg, out, device, objective)[1]
    say(f"data-parallel on {spread.workers} Ray worker{'s' if spread.workers != 1 else ''} "
        f"({spread.threads} thread{'s' if spread.threads != 1 else ''} each"
        + (", one GPU each)" if spread.device == "cuda" else ")"))
    return train_on_ray(data, cfg, out, spread, objective, say)


def run_train(job: TrainJob, say: Say = to_log) -> tuple[Path, dict[str, Any]]:
    """Check the architecture, load the data, train and save; returns the run folder and the
    training record."""
    cfg = job.train
    if cfg.arch not in architectures():
        raise ConfigError(f"unknown architecture {cfg.arch!r} (known: {', '.join(architectures())})")
    dataset = job.data.load()
    out = job.out or Path(f"runs/{dataset.info.name}-{cfg.arch}-seed{cfg.seed}")
    check_writable(out)
    say(f"training {cfg.arch} on {dataset.summary()}")
    record = train_job(job.data, dataset, cfg, out, resolve_device(job.device), job.spread, say=say)
    return out, record
