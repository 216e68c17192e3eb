"""Training a model and saving it with its record: ``medfool train``, the demo and the
poisoning experiments share this step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from medfool.data.dataset import Dataset
from medfool.models import save_checkpoint
from medfool.models.classifier import Classifier
from medfool.models.train import Objective, TrainConfig, fit
from medfool.runs.common import log_epoch
from medfool.utils.io import atomic_write_json

__all__ = ["train_and_save"]

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
