"""``medfool demo``: train (or reuse) a small model on real histology data, audit it, and
write the audit's report (OUT/report.html).

Dataset choice, in order: the full official PathMNIST (found locally or downloaded), else the
best real histology data found (LC25000 lung, then the PathMNIST subset), else the synthetic
set, announced loudly because it is not medical data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from medfool import __version__
from medfool.audit import load_config, run_audit
from medfool.cli.commands import _check_writable, _print_epoch, _say
from medfool.cli.common import add_run_options, command_record, fmt
from medfool.data import load_dataset
from medfool.data.dataset import Dataset
from medfool.data.locate import cache_dir
from medfool.data.split import stratified_split
from medfool.errors import DataError, DownloadError
from medfool.eval.metrics import evaluate
from medfool.models import load_classifier, save_checkpoint
from medfool.models.train import TrainConfig, fit
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json

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
    from medfool.data.catalog import MEDMNIST
    from medfool.data.download import download

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


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_writable(out)
    audit_cfg = load_config(args.config, seed=args.seed, n=args.n)
    if args.config is None:  # the demo's ensemble is the fast preset (the standard one is the audit's default)
        audit_cfg = replace(audit_cfg, whitebox=replace(audit_cfg.whitebox, ensemble="fast"))
    device = resolve_device(args.device)
    dataset, why = choose_dataset(args.data_dir, not args.no_download, args.split_seed)
    _say(f"demo dataset: {why}")
    _say(f"  {dataset.summary()}")
    for note in dataset.info.notes:
        _say(f"  note: {note}")
    cfg = replace(DEMO_CONFIG, seed=args.seed)
    cached = cache_dir() / "models" / f"demo-{dataset.info.name}-{_cache_key(dataset, cfg, args.seed)}.safetensors"
    if cached.is_file() and not args.retrain:
        model, record = load_classifier(cached, device=device)
        _say(f"reusing cached model {cached}")
    else:
        train = dataset.split("train")
        if len(train) > DEMO_MAX_TRAIN:
            idx = stratified_split(train.labels.numpy(), {"keep": DEMO_MAX_TRAIN / len(train),
                                                          "drop": 1 - DEMO_MAX_TRAIN / len(train)}, args.seed)
            train = train.subset(np.asarray(idx["keep"]))
            _say(f"  training on a stratified sample of {len(train):,} training tiles")
        _say(f"training {cfg.arch} ({cfg.epochs} epochs at most, seed {args.seed}) ...")
        result = fit(dataset, cfg, device=device, train_split=train, on_epoch=_print_epoch)
        model, record = result.model, result.record
        save_checkpoint(model, cached, record)
    metrics = evaluate(model, dataset.split("test"))
    save_checkpoint(model, out / "model.safetensors", record)
    atomic_write_json(out / "demo.json", {"dataset": dataset.info.name, "why": why, "test": metrics,
                                          "seed": args.seed, "record": record})
    _say(f"test accuracy {fmt(metrics['accuracy'])}, AUC {fmt(metrics['auc'])} on {metrics['n']:,} held-out "
         f"{dataset.info.name} images")
    _say(f"auditing the model on {audit_cfg.n} {audit_cfg.split} images (seed {audit_cfg.seed}) ...")
    report = run_audit(model, str(out / "model.safetensors"), dataset, audit_cfg, out, fresh=args.fresh,
                       command=command_record(args))
    for line in json.loads((out / "results.json").read_text())["findings"]:
        _say(f"  - {line}")
    _say(f"model, audit store and results in {out}/")
    _say(f"report: {report.resolve()}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="train (or reuse) a small model on real histology data, audit it, write a report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", action="store_true", help="never try to download PathMNIST")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="ignore the cached demo model")
    p.add_argument("--out", default="medfool-demo", help="output folder (default medfool-demo)")
    p.add_argument("--n", type=int, default=None, help="test images to audit (default 128)")
    p.add_argument("--config", default=None, help="TOML audit config (see 'medfool audit --print-config')")
    p.add_argument("--fresh", action="store_true", help="discard an earlier demo audit in OUT and start over")
    add_run_options(p)
    p.set_defaults(func=cmd_demo)
