"""What every run shares: its output channel, loading the data, checking the output folder and
the model's fit to the data, and the example grid of a result.

A run never prints: it reports through ``say``, a callback that receives one line of text per
event (the command line prints them; a service or a notebook can collect them). Progress bars
come from :mod:`medfool.utils.progress`, per-epoch lines from :func:`log_epoch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from medfool.attacks.base import AttackResult
from medfool.data import load_dataset
from medfool.data.dataset import Dataset, DatasetInfo
from medfool.data.windowing import NativeOptions
from medfool.errors import CheckpointError, ConfigError, DataError
from medfool.models.classifier import Classifier
from medfool.models.predict import PredictModel
from medfool.report.grid import result_grid

__all__ = [
    "LOCK",
    "DataSource",
    "Say",
    "check_outputs",
    "check_writable",
    "fmt",
    "folder_lock",
    "log_epoch",
    "match_model_to_data",
    "result_order",
    "save_result_grid",
    "to_log",
]

log = logging.getLogger("medfool")

LOCK = ".medfool.lock"  # see folder_lock

Say = Callable[[str], None]
"""A run's output channel: called with one line of text per event."""


def to_log(text: str) -> None:
    """The default channel: the line goes to the ``medfool`` logger at INFO."""
    log.info("%s", text)


@dataclass(frozen=True)
class DataSource:
    """Where a run's images come from: a dataset name or path and how to load it."""

    dataset: str
    size: int | None = None
    data_dir: str | None = None
    allow_download: bool = True
    split_seed: int = 0
    allow_outside_paths: bool = False  # manifests and sidecars may name files outside their folder
    native: NativeOptions | None = None  # DICOM / NIfTI: the window and a volume's slice axis

    def load(self) -> Dataset:
        """The dataset, with its loader's notes (a split made on the fly, ...) logged as warnings."""
        dataset = load_dataset(self.dataset, size=self.size, data_dir=self.data_dir,
                               allow_download=self.allow_download, split_seed=self.split_seed,
                               allow_outside_paths=self.allow_outside_paths, native=self.native)
        for note in dataset.info.notes:
            log.warning("note: %s", note)
        return dataset


def fmt(value: object) -> str:
    """A number for a progress line: four decimals, "n/a" for NaN."""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def log_epoch(row: dict[str, float]) -> None:
    """One line per training epoch (the ``on_epoch`` callback of :func:`medfool.models.train.fit`)."""
    log.info("epoch %d  train loss %.4f  val loss %.4f  val acc %.4f  val AUC %.4f  (%.0f s)",
             row["epoch"], row["train_loss"], row["val_loss"], row["val_accuracy"], row["val_auc"], row["elapsed_s"])
    if "val_robust_accuracy" in row:
        log.info("epoch %d  val robust acc %.4f", row["epoch"], row["val_robust_accuracy"])
    if "val_noisy_accuracy" in row:
        log.info("epoch %d  val acc under the smoothing noise %.4f", row["epoch"], row["val_noisy_accuracy"])


def check_writable(out: Path) -> None:
    """Fail before any work if ``out`` cannot become a folder we write into. Probes with a real
    temporary file (permission bits say nothing for root or read-only mounts); creates nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: output path exists and is not a folder")
    probe_dir = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe_dir.is_dir():
        raise ConfigError(f"{out}: cannot create the output folder, {probe_dir} is a file")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: output folder is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=".medfool-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{out}: output folder is not writable ({exc.strerror or exc})") from None


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """One run per output folder at a time: an advisory lock on OUT/.medfool.lock holding the
    owner's pid. A second run into the same folder gets one line naming that pid."""
    path = out / LOCK
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(f"{out}: another medfool run (pid {holder}) is writing into this folder; wait for it "
                              "to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def match_model_to_data(model: Classifier | PredictModel, dataset: Dataset, model_path: str) -> None:
    """Refuse to evaluate or attack a model on data it was not built for. A model that resizes
    inside (``network_input``: HuggingFace and MONAI networks) takes the data at its own size."""
    split = next(iter(dataset.splits.values()))
    if isinstance(model, Classifier):
        model.meta = model.meta.for_input(split.image_shape)
    if tuple(split.image_shape) != tuple(model.meta.input_shape):
        raise DataError(f"{model_path}: model expects images {model.meta.input_shape} (C, H, W) but "
                        f"{dataset.info.name} has {split.image_shape}")
    if model.task != dataset.info.task or len(model.class_names) != dataset.info.num_classes:
        raise DataError(f"{model_path}: model is {model.task} over {len(model.class_names)} classes but "
                        f"{dataset.info.name} is {dataset.info.task} over {dataset.info.num_classes}")
    if [c.lower() for c in model.class_names] != [c.lower() for c in dataset.info.class_names] and not all(
            c.startswith("class_") for c in dataset.info.class_names):
        log.warning("class names differ: model %s, dataset %s", model.class_names, dataset.info.class_names)


def check_outputs(model: Classifier | PredictModel, x: torch.Tensor, origin: str) -> None:
    """Refuse a model whose answers on these images are NaN or infinite (finite weights do not
    guarantee finite outputs): every number computed from them would be meaningless."""
    with torch.no_grad():
        out = model(x[:64]) if isinstance(model, Classifier) else model.predict(x[:64])
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"{origin}: the model answers NaN or infinite values on the images")


def save_result_grid(path: Path, model: Classifier | PredictModel, info: DatasetInfo, x: torch.Tensor,
                     y: torch.Tensor, result: AttackResult, title: str, rows: int = 8) -> Path:
    """The example grid of ``result``: the model's confidences are computed here, the figure
    drawn by :func:`medfool.report.grid.result_grid` (which runs no model)."""
    order = result_order(result, rows)
    p_clean = p_adv = None
    if not (isinstance(model, PredictModel) and model.may_refuse):  # a served model: no queries beyond the attack's
        with torch.no_grad():
            p_clean = model.probabilities(x[order])
            p_adv = model.probabilities(result.x_adv[order])
    result_grid(path, info, model.task, x, y, result, order, p_clean, p_adv, title)
    return path


def result_order(result: AttackResult, rows: int) -> torch.Tensor:
    """The images a grid shows: successful examples first, at most ``rows``."""
    return torch.argsort((~(result.success & result.clean_correct)).long().cpu(), stable=True)[:rows]
