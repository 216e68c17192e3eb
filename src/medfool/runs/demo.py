"""``medfool demo``: train (or reuse) a small model on real histology data, audit it, and
write the audit's report (OUT/report.html).

Dataset choice, in order: the full official PathMNIST (found locally or downloaded), else the
best real histology data found (LC25000 lung, then the PathMNIST subset), else the synthetic
set, announced loudly because it is not medical data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medfool import __version__
from medfool.data import load_dataset
from medfool.data.catalog import MEDMNIST
from medfool.data.dataset import Dataset
from medfool.data.download import download
from medfool.data.locate import cache_dir
from medfool.data.split import stratified_split
from medfool.errors import DataError, DownloadError
from medfool.models import load_classifier, save_checkpoint
from medfool.models.metrics import evaluate
from medfool.models.train import TrainConfig, fit
from medfool.runs.audit import load_config, run_audit
from medfool.runs.common import Say, check_writable, fmt, log_epoch, to_log
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json
from medfool.vocab import Device

__all__ = ["DEMO_CONFIG", "DemoJob", "choose_dataset", "run_demo"]

log = logging.getLogger("medfool")

# Enough for >= 0.93 on LC25000 and >= 0.75 on the PathMNIST subset in about two minutes on 2 cores.
DEMO_CONFIG = TrainConfig(arch="small_cnn", epochs=8, patience=3)
DEMO_MAX_TRAIN = 12_000  # a stratified sample of the 90k PathMNIST tiles keeps the demo short


def choose_dataset(data_dir: str | None, allow_download: bool, split_seed: int) -> tuple[Dataset, str]:
    """The best real histology data available, and a sentence saying why it was chosen."""
    reasons = []
    try:
        path_ds = load_dataset("pathmnist", data_dir=data_dir, allow_download=allow_download, split_seed=split_seed)
        if not path_ds.info.notes:  # official file: it ships its own val/test splits
            return path_ds, "PathMNIST (official file)"
        reasons.append("only the 1,000-tile PathMNIST subset is present")
        if allow_download:
            try:
                full = load_dataset(str(_download_full_pathmnist()), split_seed=split_seed)
                return full, "PathMNIST (official file, downloaded)"
            except DownloadError as exc:
                reasons.append(f"the full file could not be downloaded ({exc})")
    except (DataError, DownloadError) as exc:
        path_ds = None
        reasons.append(f"PathMNIST is unavailable ({exc})")
    try:
        lung = load_dataset("lc25000_lung", data_dir=data_dir, allow_download=False, split_seed=split_seed)
        return lung, "LC25000 lung histology (" + "; ".join(reasons) + ")"
    except DataError:
        pass
    if path_ds is not None:
        return path_ds, "the PathMNIST subset (" + "; ".join(reasons) + ")"
    log.warning("=" * 72)
    log.warning("NO REAL MEDICAL DATA FOUND: the demo runs on SYNTHETIC patterns, not medical images.")
    log.warning("Set MEDFOOL_DATA_DIR or --data-dir, or allow downloads, for real results.")
    log.warning("=" * 72)
    return load_dataset("synthetic", split_seed=split_seed), "SYNTHETIC data (no real data found)"


def _download_full_pathmnist() -> Path:
    entry = MEDMNIST["pathmnist"]
    target = cache_dir() / "official" / entry.filename(28)
    if target.is_file():
        return target
    return download(entry.url(28), target, entry.md5[28])


def _cache_key(dataset: Dataset, cfg: TrainConfig, seed: int) -> str:
    src = Path(dataset.info.source)
    stamp = [src.stat().st_size, int(src.stat().st_mtime)] if src.is_file() else []
    blob = json.dumps([dataset.info.name, str(src), stamp, asdict(cfg), seed, __version__], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DemoJob:
    """Everything ``medfool demo`` needs."""

    out: Path
    data_dir: str | None = None
    allow_download: bool = True
    split_seed: int = 0
    retrain: bool = False
    n: int | None = None
    config: str | None = None
    fresh: bool = False
    seed: int = 0
    device: Device = "auto"
    command: dict[str, Any] = field(default_factory=dict)


def run_demo(job: DemoJob, say: Say = to_log) -> Path:
    """Train (or reuse) the demo model, audit it; returns the report's path."""
    out = job.out
    check_writable(out)
    audit_cfg = load_config(job.config, seed=job.seed, n=job.n)
    if job.config is None:  # the demo always runs the fast ensemble, whatever the default
        audit_cfg = replace(audit_cfg, whitebox=replace(audit_cfg.whitebox, ensemble="fast"))
    device = resolve_device(job.device)
    dataset, why = choose_dataset(job.data_dir, job.allow_download, job.split_seed)
    say(f"demo dataset: {why}")
    say(f"  {dataset.summary()}")
    for note in dataset.info.notes:
        say(f"  note: {note}")
    cfg = replace(DEMO_CONFIG, seed=job.seed)
    cached = cache_dir() / "models" / f"demo-{dataset.info.name}-{_cache_key(dataset, cfg, job.seed)}.safetensors"
    if cached.is_file() and not job.retrain:
        model, record = load_classifier(cached, device=device)
        say(f"reusing cached model {cached}")
    else:
        train = dataset.split("train")
        if len(train) > DEMO_MAX_TRAIN:
            idx = stratified_split(train.labels.numpy(), {"keep": DEMO_MAX_TRAIN / len(train),
                                                          "drop": 1 - DEMO_MAX_TRAIN / len(train)}, job.seed)
            train = train.subset(np.asarray(idx["keep"]))
            say(f"  training on a stratified sample of {len(train):,} training tiles")
        say(f"training {cfg.arch} ({cfg.epochs} epochs at most, seed {job.seed}) ...")
        result = fit(dataset, cfg, device=device, train_split=train, on_epoch=log_epoch)
        model, record = result.model, result.record
        save_checkpoint(model, cached, record)
    metrics = evaluate(model, dataset.split("test"))
    save_checkpoint(model, out / "model.safetensors", record)
    atomic_write_json(out / "demo.json", {"dataset": dataset.info.name, "why": why, "test": metrics,
                                          "seed": job.seed, "record": record})
    say(f"test accuracy {fmt(metrics['accuracy'])}, AUC {fmt(metrics['auc'])} on {metrics['n']:,} held-out "
        f"{dataset.info.name} images")
    say(f"auditing the model on {audit_cfg.n} {audit_cfg.split} images (seed {audit_cfg.seed}) ...")
    report = run_audit(model, str(out / "model.safetensors"), dataset, audit_cfg, out, fresh=job.fresh,
                       command=job.command, say=say)
    for line in json.loads((out / "results.json").read_text())["findings"]:
        say(f"  - {line}")
    say(f"model, audit store and results in {out}/")
    say(f"report: {report.resolve()}")
    return report


