"""Subcommands: datasets, download, train, evaluate, info, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import (
    MODEL_HELP,
    add_data_options,
    add_run_options,
    add_worker_options,
    data_source,
    emit_json,
    float_in,
    model_path,
    positive,
    say,
)
from medfool.data import list_datasets
from medfool.data.catalog import MEDMNIST, SIZES
from medfool.data.download import download
from medfool.data.locate import cache_dir, find_file
from medfool.errors import DataError
from medfool.models import architectures
from medfool.models.train import TrainConfig
from medfool.runs.common import fmt
from medfool.runs.model_tools import evaluate_model, model_info
from medfool.runs.train import TrainJob, choose_spread, run_train
from medfool.vocab import DEVICE_CHOICES, SPLITS

__all__ = ["cmd_datasets", "cmd_download", "cmd_evaluate", "cmd_info", "cmd_train", "register"]


# -- datasets ---------------------------------------------------------------------------------
def cmd_datasets(args: argparse.Namespace) -> int:
    rows = list_datasets(args.data_dir)
    if args.json:
        emit_json([{"name": r.name, "kind": r.kind, "path": str(r.path) if r.path else None, "detail": r.detail}
                   for r in rows])
        return 0
    width = max(len(r.name) for r in rows)
    for r in rows:
        where = str(r.path) if r.path else "-"
        say(f"{r.name:<{width}}  {r.kind:<20}  {r.detail:<45}  {where}")
    return 0


# -- download ---------------------------------------------------------------------------------
def cmd_download(args: argparse.Namespace) -> int:
    if args.name not in MEDMNIST:
        raise DataError(f"unknown MedMNIST dataset {args.name!r} (known: {', '.join(MEDMNIST)})")
    entry = MEDMNIST[args.name]
    target = Path(args.data_dir or cache_dir()) / entry.filename(args.size)
    existing = find_file(entry.filename(args.size), [target.parent])
    if existing is not None and not args.force:
        say(f"{existing} already present")
        return 0
    download(entry.url(args.size), target, entry.md5[args.size])
    say(f"saved {target} (MD5 verified)")
    return 0


# -- train ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    arch_kwargs = {"width": args.width} if args.width else {}
    cfg = TrainConfig(arch=args.arch, arch_kwargs=arch_kwargs, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, weight_decay=args.weight_decay, ema=args.ema, balanced=args.balanced,
                      patience=args.patience, augment=args.augment, seed=args.seed, input_size=args.input_size)
    spread = choose_spread(args.workers, args.ray_address, args.threads_per_worker, args.device, say)
    out, record = run_train(TrainJob(data_source(args), cfg, Path(args.out) if args.out else None, args.device,
                                     spread), say=say)
    test = record["metrics"]["test"] or record["metrics"]["val"]
    which = "test" if record["metrics"]["test"] else "val"
    say(f"{record['dataset']}: {which} accuracy {fmt(test['accuracy'])}, AUC {fmt(test['auc'])} "
        f"(best epoch {record['best_epoch']}/{record['epochs_run']}, {record['train_wall_s']:.0f} s) -> "
        f"{out / 'model.safetensors'}")
    return 0


# -- evaluate ---------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    name, metrics = evaluate_model(args.model, data_source(args), args.split, args.device)
    if args.json:
        emit_json(metrics)
    else:
        say(f"{name} [{args.split}] n={metrics['n']}: accuracy {fmt(metrics['accuracy'])}, "
            f"AUC {fmt(metrics['auc'])}")
    return 0


# -- info -------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    m, record = info.meta, info.record
    if args.json:
        emit_json({"model": m.to_json(), "record": record})
        return 0
    inside = "" if m.network_input is None else f" (resized to {m.network_input} inside the model)"
    say(f"{args.model}: {m.arch or 'external'} ({info.parameters:,} parameters), {m.task}, input "
        f"{m.input_shape}{inside}")
    say(f"classes: {', '.join(m.class_names)}")
    if m.critical_classes:
        say(f"critical: {', '.join(m.class_names[i] for i in m.critical_classes)}")
    test = (record.get("metrics") or {}).get("test")
    if test:
        say(f"trained on {record.get('dataset')}, seed {record.get('seed')}: test accuracy "
            f"{fmt(test['accuracy'])}, AUC {fmt(test['auc'])}")
    return 0


# -- parser -----------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_datasets(sub)
    _add_download(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_info(sub)


def _add_datasets(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("datasets", help="list the datasets medfool can find or download",
                       description="List datasets found in --data-dir, $MEDFOOL_DATA_DIR and the user cache, "
                                   "then the MedMNIST sets that can be downloaded.")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_datasets)


def _add_download(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("download", help="download an official MedMNIST file (MD5-verified)",
                       description="Download an official MedMNIST .npz into --data-dir (default: the user cache), "
                                   "verify its MD5 and write it atomically.")
    p.add_argument("name", help=f"one of: {', '.join(MEDMNIST)}")
    p.add_argument("--size", type=int, default=28, choices=SIZES)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.set_defaults(func=cmd_download)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a classifier and save a checkpoint",
                       description="Train a model from the architecture registry on a dataset (medfool's small_cnn "
                                   "and resnet18; with the monai extra densenet121, monai_resnet18, resnet50, "
                                   "efficientnet_b0, vit). Seeded and "
                                   "reproducible; early stopping on validation accuracy. Writes "
                                   "OUT/model.safetensors (weights + metadata) and OUT/metrics.json.")
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--arch", default="small_cnn", help=f"architecture (known: {', '.join(architectures())})")
    p.add_argument("--width", type=positive, default=None, help="channel width of the architecture")
    p.add_argument("--input-size", type=positive, default=None, metavar="PX",
                   help="pixel size the network sees; the model resizes the data's images to it inside, so "
                        "attacks still work on the data's own pixels (default: the data's size, or 64 for the "
                        "MONAI networks on smaller images)")
    p.add_argument("--epochs", type=positive, default=None,
                   help="maximum epochs (default: about 60,000 images' worth, between 10 and 30)")
    p.add_argument("--batch-size", type=positive, default=128)
    p.add_argument("--lr", type=float_in(1e-12, 100.0), default=None,
                   help="AdamW peak learning rate, cosine schedule (default: 3e-3 for medfool's CNNs, 1e-3 for "
                        "the MONAI networks)")
    p.add_argument("--weight-decay", type=float_in(0.0, 1.0), default=None,
                   help="AdamW weight decay (default: 5e-4 for medfool's CNNs, 0.05 for the MONAI networks)")
    p.add_argument("--ema", type=float_in(0.0, 0.9999), default=None, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights with this decay; 0: off "
                        "(default: 0.99 for the MONAI networks, off for medfool's CNNs)")
    p.add_argument("--patience", type=positive, default=10, help="epochs without validation gain before stopping")
    p.add_argument("--balanced", action="store_true", help="sample classes equally often (imbalanced data)")
    p.add_argument("--augment", default="auto", metavar="PARTS",
                   help="none, or parts joined by '+': flip, dihedral (flips and 90-degree rotations), shift "
                        "(up to 1/8 of the image), stain (H&E stain jitter, RGB). auto (default): dihedral for RGB "
                        "tiles, none for grayscale; the MONAI networks also get shift")
    p.add_argument("--out", default=None, help="output folder (default runs/DATASET-ARCH-seedN)")
    add_worker_options(p)
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate", help="clean accuracy and AUC of a model on a dataset split")
    p.add_argument("--model", "-m", required=True, type=model_path, help=MODEL_HELP)
    add_data_options(p)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def _add_info(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="show a checkpoint's architecture, classes and training record")
    p.add_argument("model", type=model_path, help=MODEL_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
