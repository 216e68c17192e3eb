"""``medfool export``: a checkpoint as ONNX, to attack it as a black box."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import model_path, say
from medfool.runs.model_tools import export_model

__all__ = ["cmd_export", "register"]


def cmd_export(args: argparse.Namespace) -> int:
    out = export_model(args.model, Path(args.out))
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
