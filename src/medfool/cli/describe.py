"""``medfool describe``: write the JSON description a TorchScript or state-dict file needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import parse_option, positive, say
from medfool.errors import ConfigError
from medfool.models.architectures import architectures
from medfool.models.wrap import describe
from medfool.utils.io import atomic_write_json
from medfool.vocab import TASKS

__all__ = ["cmd_describe", "register"]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 1,224,224), got {text!r}") from None
    return c, h, w


def cmd_describe(args: argparse.Namespace) -> int:
    path = Path(args.model)
    out = Path(args.out) if args.out else path.with_suffix(".json")
    if out.exists() and not args.force:
        raise ConfigError(f"{out}: exists; pass --force to replace it")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if len(classes) < 2:
        raise ConfigError(f"--classes needs at least two comma-separated names, got {args.classes!r}")
    critical = []
    for name in args.critical.split(",") if args.critical else []:
        if name.strip() not in classes:
            raise ConfigError(f"--critical: {name.strip()!r} is not one of the classes ({', '.join(classes)})")
        critical.append(classes.index(name.strip()))
    meta = describe(path, task=args.task, classes=classes, input_shape=args.input_shape, mean=args.mean,
                    std=args.std, num_outputs=args.outputs, network_input=args.network_input, critical=critical,
                    arch=args.arch, arch_kwargs=dict(args.arch_option or []))
    if out.resolve() != path.with_suffix(".json").resolve():
        say(f"note: medfool reads the description from {path.with_suffix('.json').name} beside the model")
    atomic_write_json(out, meta.to_json())
    say(f"wrote {out}: {meta.task}, {len(meta.class_names)} classes, input {meta.input_shape}, "
        f"{meta.num_outputs} output(s); checked against {path.name}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("describe", help="write the JSON description a TorchScript or state-dict model needs",
                       description="Describe a TorchScript archive or a state-dict file (task, classes, input "
                                   "shape, normalisation) and write MODEL.json beside it. The description is "
                                   "checked first: the weights must load (into --arch for a state dict) and "
                                   "the network must answer with one output per class. Normalisation is in "
                                   "[0, 1] pixel units (ImageNet: --mean 0.485,0.456,0.406 --std "
                                   "0.229,0.224,0.225).")
    p.add_argument("model", help="TorchScript archive, state dict (.pt/.pth) or bare .safetensors weights")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--classes", required=True, help="class names in output order, comma-separated")
    p.add_argument("--input-shape", required=True, type=_shape, metavar="C,H,W",
                   help="the images the model takes, e.g. 1,224,224")
    p.add_argument("--mean", type=_floats, default=None, help="per-channel mean in [0, 1] units (default 0)")
    p.add_argument("--std", type=_floats, default=None, help="per-channel std in [0, 1] units (default 1)")
    p.add_argument("--outputs", type=positive, default=None,
                   help="number of logits (default: one per class; binary: 2, give 1 for a one-logit model)")
    p.add_argument("--network-input", type=_shape, default=None, metavar="C,H,W",
                   help="what the network takes when it differs from the images: they are resized and grey "
                        "ones repeated to RGB inside the model")
    p.add_argument("--critical", default="", help="classes whose miss is the dangerous error, comma-separated")
    p.add_argument("--arch", default=None,
                   help=f"architecture a state dict's weights belong to (known: {', '.join(architectures())})")
    p.add_argument("--arch-option", type=parse_option, action="append", metavar="KEY=VALUE",
                   help="architecture option, e.g. width=64 (repeatable)")
    p.add_argument("--out", default=None, help="where to write (default: MODEL.json beside the model)")
    p.add_argument("--force", action="store_true", help="replace an existing description")
    p.set_defaults(func=cmd_describe)
