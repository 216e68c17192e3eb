"""Black-box parts of the command line: loading a query-only victim (ONNX, labels only),
``medfool attack fooling``, ``medfool attack transfer`` and ``medfool export``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.attacks import get_attack
from medfool.attacks.blackbox.fooling import FoolingConfig, fooling_images
from medfool.attacks.blackbox.oracle import OnnxModel, PredictModel, export_onnx, from_classifier
from medfool.attacks.blackbox.transfer import transfer_attack
from medfool.cli.commands import _check_writable, _say
from medfool.cli.common import command_record, fmt
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.report.grid import class_grid, result_grid
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_open, atomic_write_json
from medfool.utils.repro import environment

SPECIAL = ("fooling", "transfer")


def load_victim(path: str, device: str, labels_only: bool) -> Classifier | PredictModel:
    """A model to attack through queries: an ONNX export, or a checkpoint (labels only on request)."""
    output = "labels" if labels_only else "probs"
    if path.endswith(".onnx"):
        return OnnxModel.load(path, output)
    model, _ = load_classifier(path, device=resolve_device(device))
    return from_classifier(model, "labels") if labels_only else model


def run_fooling(args: argparse.Namespace, model: Classifier | PredictModel, info: Any, out: Path,
                options: dict[str, Any]) -> int:
    pm = model if isinstance(model, PredictModel) else from_classifier(model)
    try:
        cfg = FoolingConfig(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fooling: {exc}") from None
    queries = args.queries or 300_000
    _say(f"evolving fooling images ({cfg.encoding} encoding) for {pm.num_classes} classes, at most {queries:,} "
         "queries in all")
    result = fooling_images(pm, cfg, torch.Generator().manual_seed(args.seed), queries=queries)
    names = pm.class_names
    k, e = result.confidence.shape
    cols = [min(j, e - 1) for j in range(3)]  # the three best images of each class, one row per class
    images = result.images.cpu()
    captions = [tuple(f"{names[i][:18] + ' ' if j == 0 else ''}{float(result.confidence[i, c]):.4f}"
                      for j, c in enumerate(cols)) for i in range(k)]
    class_grid(out / f"fooling_{cfg.encoding}.png", [images[:, c] for c in cols], captions,
               f"fooling images ({cfg.encoding}) for {info.name}: model confidence")
    summary = result.summary(names, cfg.threshold)
    with atomic_open(out / f"fooling_{cfg.encoding}.npz") as handle:
        np.savez_compressed(handle, images=result.images.cpu().numpy(),  # type: ignore[arg-type]
                            confidence=result.confidence.cpu().numpy())
    atomic_write_json(out / "results.json", {
        "attack": "fooling", "model": str(args.model), "dataset": info.name, "seed": args.seed,
        "config": {**cfg.__dict__, "queries": queries}, "summary": summary, "history": result.history,
        "environment": environment(), "command": command_record(args)})
    for name, conf in summary["best_confidence"].items():
        _say(f"  {name:<40} {conf:.4f}{'  >= ' + str(cfg.threshold) if conf >= cfg.threshold else ''}")
    _say(f"{summary['classes_reached']} of {summary['classes']} classes reach {cfg.threshold:g} confidence, "
         f"{result.queries:,} queries, {result.wall_s:.0f} s -> {out}/fooling_{cfg.encoding}.png")
    return 0


def run_transfer(args: argparse.Namespace, victim: Classifier | PredictModel, info: Any, x: torch.Tensor,
                 y: torch.Tensor, index: torch.Tensor, target: Any, out: Path, options: dict[str, Any],
                 eps: float | None) -> int:
    if not args.surrogate:
        raise ConfigError("transfer needs --surrogate CKPT: the model the attack is crafted on")
    surrogate, _ = load_classifier(args.surrogate, device=str(x.device))
    base = options.pop("base", "pgd")
    from dataclasses import fields

    from medfool.attacks import attack_class

    try:
        if "early_stop" in {f.name for f in fields(attack_class(base).Config)}:
            # stopping at the surrogate's boundary makes perturbations that barely transfer
            options.setdefault("early_stop", False)
        attack = get_attack(base, **options, **({} if eps is None else {"eps": eps}))
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    try:
        t = transfer_attack(surrogate, victim, x, y, attack, target=target,
                            generator=torch.Generator().manual_seed(args.seed))
    except ValueError as exc:
        raise ConfigError(f"{args.surrogate}: {exc}") from None
    s = t.summary()
    _say(f"  {base} on the surrogate: success {fmt(s['surrogate_success'])}; on the victim: success "
         f"{fmt(s['victim_success'])}, transfer rate {fmt(s['transfer_rate'])} (fooled on the surrogate -> fooled "
         "on the victim)")
    atomic_write_json(out / "results.json", {
        "attack": "transfer", "base": base, "model": str(args.model), "surrogate": str(args.surrogate),
        "dataset": info.name, "seed": args.seed, "eps": eps, "summary": s,
        "surrogate_summary": t.on_surrogate.summary(), "victim_summary": t.on_victim.summary(),
        "images": [{"index": int(i), "surrogate_success": bool(a), "victim_success": bool(b),
                    "victim_clean_correct": bool(c)} for i, a, b, c in
                   zip(index, t.on_surrogate.success, t.on_victim.success, t.on_victim.clean_correct, strict=True)],
        "environment": environment(), "command": command_record(args)})
    result_grid(out / "grid.png", victim, info, x, y, t.on_victim,  # type: ignore[arg-type]
                f"transfer of {base} from {Path(args.surrogate).name} to {Path(str(args.model)).name}")
    _say(f"wrote {out}/results.json, grid.png")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_writable(out.parent if str(out.parent) else Path("."))
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: the export file must end in .onnx")
    model, _ = load_classifier(args.model)
    try:
        export_onnx(model, out)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx package: pip install 'medfool[onnx]' ({exc})") from None
    _say(f"wrote {out} (pixels in [0, 1] in, logits out; normalisation inside) and {out.with_suffix('.json')} "
         "(classes, task, input shape). Attack it with e.g. 'medfool attack square -m "
         f"{out} -d DATASET --queries 1000'.")
    return 0


def register_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, to attack it as a black box",
                       description="Write the model as ONNX (normalisation inside: it takes pixels in [0, 1] and "
                                   "returns logits) plus a JSON file with its classes, task and input shape. "
                                   "Black-box attacks take the .onnx file as --model (needs onnxruntime).")
    p.add_argument("--model", "-m", required=True, help="checkpoint to export")
    p.add_argument("--out", "-o", required=True, help="output .onnx file")
    p.set_defaults(func=cmd_export)
