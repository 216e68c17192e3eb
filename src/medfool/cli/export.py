"""``medfool export``: a checkpoint as ONNX, to attack it as a black box."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import model_path, say
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.predict import export_onnx
from medfool.runs.common import check_writable

__all__ = ["cmd_export", "register"]


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_writable(out.parent if str(out.parent) else Path("."))
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: the export file must end in .onnx")
    model, _ = load_classifier(args.model)
    try:
        export_onnx(model, out)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx package: pip install 'medfool[onnx]' ({exc})") from None
    say(f"wrote {out} (pixels in [0, 1] in, logits out; normalisation inside) and {out.with_suffix('.json')} "
         "(classes, task, input shape). Attack it with e.g. 'medfool attack square -m "
         f"{out} -d DATASET --queries 1000'.")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, to attack it as a black box",
                       description="Write the model as ONNX (normalisation inside: it takes pixels in [0, 1] and "
                                   "returns logits) plus a JSON file with its classes, task and input shape. "
                                   "Black-box attacks take the .onnx file as --model (needs onnxruntime).")
    p.add_argument("--model", "-m", required=True, type=model_path, help="checkpoint to export (or its run folder)")
    p.add_argument("--out", "-o", required=True, help="output .onnx file")
    p.set_defaults(func=cmd_export)
