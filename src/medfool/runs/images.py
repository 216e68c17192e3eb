"""What an attack run works on: the job (:class:`AttackJob`), the model attacked through
queries or gradients (:func:`load_victim`) and the seeded sample of images (:func:`select_images`).
``medfool attack`` and the patch runs it routes share them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medfool.attacks.base import TargetSpec, Victim
from medfool.data.dataset import Dataset
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.predict import OnnxModel, PredictModel, from_classifier
from medfool.runs.common import DataSource, Say, check_outputs, match_model_to_data
from medfool.utils.device import resolve_device
from medfool.utils.repro import seed_everything
from medfool.vocab import MULTI_LABEL, Device, Output, SplitName

__all__ = ["AttackJob", "Images", "load_victim", "select_images"]


@dataclass(frozen=True)
class AttackJob:
    """Everything ``medfool attack`` needs. ``eps`` empty: the attack's own budget (or none)."""

    name: str
    model: str
    data: DataSource
    out: Path
    eps: tuple[float, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: Device = "auto"
    split: SplitName = "test"
    n: int = 256
    only_class: str | None = None
    target: str | None = None
    batch_size: int = 128
    craft_split: SplitName = "train"
    n_craft: int = 1000
    surrogate: str | None = None
    sweep: tuple[float, ...] | None = None
    queries: int | None = None
    labels_only: bool = False
    command: dict[str, Any] = field(default_factory=dict)  # the command line, recorded with the results
    workers: int | None = None  # per-image attacks: chunks on N Ray workers
    ray_address: str | None = None  # ... or on the Ray cluster at this address
    threads_per_worker: int | None = None
    api_keys: tuple[str, ...] = ()  # a served model (model is a URL): the attacker's keys
    run_id: str | None = None  # ... and the run's name in the server's log (default: the out folder's)

    @property
    def budgets(self) -> list[float | None]:
        return list(self.eps) or [None]


@dataclass(frozen=True)
class Images:
    """The attacked images: positions ``index`` in their split, pixels and labels, the target
    the job asks for (None, a class index or 'least-likely') and the dataset they come from."""

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    target: TargetSpec
    dataset: Dataset


def load_victim(path: str, device: Device, labels_only: bool) -> Victim:
    """A model to attack through queries: an ONNX export, or a checkpoint (labels only on request)."""
    output: Output = "labels" if labels_only else "probs"
    if path.endswith(".onnx"):
        return OnnxModel.load(path, output)
    model, _ = load_classifier(path, device=resolve_device(device))
    return from_classifier(model, "labels") if labels_only else model


def select_images(job: AttackJob, model: Victim, say: Say) -> Images:
    """The attacked images: the split, class filter, target and seeded sample the job asks for."""
    dataset = job.data.load()
    match_model_to_data(model, dataset, job.model)
    seed_everything(job.seed)
    split = dataset.split(job.split)
    labels = split.labels
    index = torch.arange(len(split))
    info = dataset.info
    if job.only_class is not None:
        index = index[labels == info.class_index(job.only_class)]
    target: TargetSpec = None
    if job.target is not None:
        if job.target in ("least-likely", "ll"):
            target = "least-likely"
        else:
            t = info.class_index(job.target)
            if model.task != MULTI_LABEL:
                dropped = int((labels[index] == t).sum())
                index = index[labels[index] != t]
                if dropped:
                    say(f"  skipping {dropped} image(s) already labelled {info.class_names[t]!r} (the target)")
            target = t
    if index.numel() > job.n:  # a seeded random sample: splits are often stored sorted by class
        pick = torch.randperm(index.numel(), generator=torch.Generator().manual_seed(job.seed))[: job.n]
        index = index[pick.sort().values]
    if index.numel() == 0:
        raise ConfigError("no images left to attack (check --only-class, --target and --n)")
    x, y = split.get(index.numpy())
    device = str(model.device)
    x, y = x.to(device), y.to(device)
    if not (isinstance(model, PredictModel) and model.may_refuse):
        # a served model is not asked anything beyond the attack's own queries: each one costs
        # budget and is seen by the service's detector
        check_outputs(model, x, job.model)
    return Images(index, x, y, target, dataset)
