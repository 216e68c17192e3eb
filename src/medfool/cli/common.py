"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from typing import Any

from medfool.runs.common import DataSource
from medfool.utils.device import DEVICE_CHOICES

__all__ = [
    "add_data_options", "add_run_options", "command_record", "data_source", "emit_json", "parse_eps",
    "parse_option", "say",
]


def add_data_options(p: argparse.ArgumentParser, *, dataset_required: bool = True) -> None:
    p.add_argument("--dataset", "-d", required=dataset_required, metavar="NAME_OR_PATH",
                   help="a MedMNIST name (pathmnist, pneumoniamnist, chestmnist, ...), a dataset described by a "
                        "JSON sidecar (e.g. lc25000_lung), 'synthetic', or a path to an .npz, PCam .h5, CSV "
                        "manifest or class-per-folder tree")
    p.add_argument("--size", type=int, default=None, help="image size for MedMNIST (28, 64, 128, 224)")
    p.add_argument("--data-dir", default=None,
                   help="folder with dataset files; searched before $MEDFOOL_DATA_DIR and the user cache")
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the stratified split made for files without val/test splits (default 0)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed, recorded in every output (default 0)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to compute (default auto)")


def say(text: str) -> None:
    """The command line's output channel: one line on stdout, flushed."""
    print(text, flush=True)


def data_source(args: argparse.Namespace) -> DataSource:
    """The --dataset, --size, --data-dir, --no-download and --split-seed options."""
    return DataSource(args.dataset, size=args.size, data_dir=args.data_dir, allow_download=not args.no_download,
                      split_seed=args.split_seed)


def parse_option(text: str) -> tuple[str, object]:
    """-o KEY=VALUE: booleans, integers, floats and comma-separated integers are typed."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options look like key=value, got {text!r}")
    value: object = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    elif "," in raw and all(part.strip().lstrip("-").isdigit() for part in raw.split(",")):
        value = tuple(int(part) for part in raw.split(","))  # e.g. box=0,0,14,14
    else:
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
    return key.replace("-", "_"), value


def parse_eps(text: str) -> float:
    """'8/255', '0.03' -> float in [0, 1]; used by attack commands."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"epsilon must be a number like 8/255 or 0.03, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"epsilon must be in [0, 1], got {text}")
    return value


def command_record(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed command line as stored with every result (the handler function left out)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
