"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from medfool.data.windowing import NativeOptions, Window
from medfool.errors import CheckpointError, DataError
from medfool.models.checkpoint import model_file
from medfool.runs.common import DataSource
from medfool.vocab import DEVICE_CHOICES

__all__ = [
    "MODEL_HELP", "add_data_options", "add_run_options", "add_worker_options", "command_record", "data_source",
    "emit_json", "model_path", "parse_eps", "parse_option", "say",
]


MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit


class Parser(argparse.ArgumentParser):
    """argparse with medfool's error style: one line, 'medfool: error: ...', exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"medfool: error: {self.prog}: {message}\n")


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not (lo <= value <= hi):  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be in [{lo:g}, {hi:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


MODEL_HELP = "checkpoint (.safetensors, TorchScript or state dict), or the folder 'medfool train --out' wrote"
URL_MODEL_HELP = (MODEL_HELP + "; for query-only attacks also a served model, http://HOST:PORT (KServe v2, "
                  "batched) or http://HOST:PORT/model/predict (MAX, one image a request), with --api-key")


def add_range_client_options(p: argparse.ArgumentParser) -> None:
    """The attacker's side of the range: keys and the run's name in the server's log."""
    p.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="API key of a served model (-m http://...); repeat it to spread the queries over several "
                        "keys in turn (a Sybil attacker); default $MEDFOOL_API_KEY")
    p.add_argument("--run-id", default=None, metavar="NAME",
                   help="the run's name in the server's query log (header X-Run-Id; default the --out folder's name)")


def api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    import os

    keys = tuple(args.api_key or ())
    return keys or ((os.environ["MEDFOOL_API_KEY"],) if os.environ.get("MEDFOOL_API_KEY") else ())


def model_path(text: str) -> str:
    """An argparse type for every option naming a model: the folder 'medfool train --out' wrote
    stands for its model.safetensors (a HuggingFace folder, a file or a missing path is kept)."""
    try:
        resolved = model_file(text)
    except CheckpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text if resolved == Path(text) else str(resolved)


model_path.__name__ = "model"
positive = int_in(1)
seed_value = int_in(0, MAX_SEED)


def add_data_options(p: argparse.ArgumentParser, *, dataset_required: bool = True) -> None:
    p.add_argument("--dataset", "-d", required=dataset_required, metavar="NAME_OR_PATH",
                   help="a MedMNIST name (pathmnist, pneumoniamnist, chestmnist, ...), a dataset described by a "
                        "JSON sidecar (e.g. lc25000_lung), 'synthetic', or a path to an .npz, PCam .h5, CSV "
                        "manifest or class-per-folder tree")
    p.add_argument("--size", type=positive, default=None, help="image size for MedMNIST (28, 64, 128, 224)")
    p.add_argument("--data-dir", default=None,
                   help="folder with dataset files; searched before $MEDFOOL_DATA_DIR and the user cache")
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let a CSV manifest or JSON sidecar name files outside its own folder (refused by default)")
    p.add_argument("--split-seed", type=seed_value, default=0,
                   help="seed of the stratified split made for files without val/test splits (default 0)")
    p.add_argument("--window", type=window_value, default=None, metavar="CENTRE,WIDTH",
                   help="DICOM/NIfTI: the native-unit window that [0, 1] maps to, e.g. 40,400 (soft tissue, HU) "
                        "(default: the files' own Window Center/Width, else the range of the data); a negative "
                        "centre needs the = form, e.g. --window=-600,1500 for lung")
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=2,
                   help="NIfTI volumes: the axis to take 2-D slices along (default 2)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=seed_value, default=0, help="random seed, recorded in every output (default 0)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to compute (default auto)")


TRAIN_WORKERS = ("train data-parallel on N Ray workers on this machine (Ray Train, gradients averaged each step; the "
                 "same batch size, epochs and schedule as one process)")


def add_worker_options(p: argparse.ArgumentParser, what: str = TRAIN_WORKERS) -> None:
    """--workers, --ray-address and --threads-per-worker: ``what`` says what N workers do."""
    p.add_argument("--workers", type=int_in(1), default=None, metavar="N",
                   help=f"{what}, each with its share of the cores and one GPU where there are GPUs (needs the ray "
                        "extra: pip install 'medfool[ray]'; without it the run stays in this process)")
    p.add_argument("--threads-per-worker", type=int_in(1), default=None, metavar="T",
                   help="torch threads of each worker (default: this machine's cores / N)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join the Ray cluster at ADDR (e.g. auto) instead of starting one; every node must see the "
                        "model and data files at the same paths (training: and the output folder)")


def say(text: str) -> None:
    """The command line's output channel: one line on stdout, flushed."""
    print(text, flush=True)


def data_source(args: argparse.Namespace) -> DataSource:
    """The --dataset, --size, --data-dir, --no-download and --split-seed options."""
    return DataSource(args.dataset, size=args.size, data_dir=args.data_dir, allow_download=not args.no_download,
                      split_seed=args.split_seed, allow_outside_paths=args.allow_outside_paths,
                      native=NativeOptions(args.window, args.slice_axis))


def window_value(text: str) -> Window:
    try:
        return Window.parse(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"epsilon must be a number like 8/255 or 0.03, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"epsilon must be in [0, 1], got {text}")
    return value


def command_record(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed command line as stored with every result (the handler function left out, API
    keys masked)."""
    return {k: [v.centre, v.width] if isinstance(v, Window) else
            (["***"] * len(v) if k == "api_key" and v else v) for k, v in vars(args).items() if k != "func"}


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
