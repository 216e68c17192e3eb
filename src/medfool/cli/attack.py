"""``medfool attack NAME``: run one attack on a model and dataset, at one or several budgets.

Writes OUT/results.json (config, seed, versions, per-budget summary, perceptibility, per-image
rows), OUT/adversarial.npz (clean and adversarial images, labels, predictions, success) and
OUT/grid.png (original | adversarial | amplified perturbation with labels and confidences).

Black-box attacks (square, simba: probabilities; hsj, boundary: labels, --labels-only) query
the model through a counter with a per-image budget (--queries); --model may be an ONNX file
written by 'medfool export'. 'transfer' crafts a white-box attack (-o base=pgd) on --surrogate
and measures it on --model; 'fooling' evolves images of nothing that the model labels with
>= 99 % confidence, one row per class in fooling_ENCODING.png.

uap and patch are universal: they are crafted on --craft-split images (default train) and
measured on the attacked (--split, default test) images. The patch's budget is its area
(-o area=0.1: at most 10 % of the image); it also writes patch.png, reports natural
cut-and-paste crops of the target class and of the image's own class as baselines, and takes
--surrogate CKPT (transfer from another model) and --sweep [AREA ...] (success as it grows).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.attacks import attack_class, attack_names, get_attack
from medfool.attacks.base import AttackResult
from medfool.attacks.blackbox.base import BlackBoxAttack
from medfool.attacks.evasion.uap import UniversalPerturbation
from medfool.attacks.patch.optimised import AdversarialPatch
from medfool.attacks.patch.sweep import DEFAULT_AREAS
from medfool.cli.blackbox import SPECIAL, load_victim, run_fooling, run_transfer
from medfool.cli.commands import _check_writable, _load, _say, check_compatible
from medfool.cli.common import add_data_options, add_run_options, command_record, fmt, parse_eps
from medfool.cli.patch import run_patch
from medfool.errors import ConfigError
from medfool.eval.perceptibility import perceptibility
from medfool.models import load_classifier
from medfool.report.grid import result_grid
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_open, atomic_write_json
from medfool.utils.progress import progress
from medfool.utils.repro import environment, seed_everything

log = logging.getLogger("medfool")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options look like key=value, got {text!r}")
    value: Any = raw
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


def _run_batched(attack: Any, model: Any, x: torch.Tensor, y: torch.Tensor, target: Any, seed: int,
                 batch: int, desc: str) -> AttackResult:
    """Attack in batches (bounded memory); the generator runs on across batches."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    parts = []
    for start in progress(range(0, x.shape[0], batch), desc=desc, unit="batch"):
        sl = slice(start, start + batch)
        tgt = target[sl] if isinstance(target, torch.Tensor) else target
        parts.append(attack(model, x[sl], y[sl], target=tgt, generator=gen))
    return AttackResult.concat(parts)


def _universal(attack: UniversalPerturbation, model: Any, craft_x: Any, craft_y: Any, x: torch.Tensor,
               y: torch.Tensor, seed: int) -> AttackResult:
    """Craft one perturbation on the crafting images, then apply it unchanged to the held-out ones."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    start = time.perf_counter()
    v, history = attack.craft(model, craft_x, craft_y, gen)
    result = attack.apply(model, v, x, y)
    result.wall_s = time.perf_counter() - start
    result.extras["fooling_history"] = history
    return result


def cmd_attack(args: argparse.Namespace) -> int:
    special = args.name in SPECIAL
    try:
        cls = None if special else attack_class(args.name)
    except ValueError as exc:
        raise ConfigError(f"{exc}; also: {', '.join(SPECIAL)}") from None
    black = special or (cls is not None and issubclass(cls, BlackBoxAttack))
    if args.model.endswith(".onnx") and not black:
        raise ConfigError(f"{args.model}: {args.name} needs gradients; an ONNX model can be attacked with "
                          "square, simba, hsj, boundary, fooling, or as the victim of transfer")
    if args.labels_only and not black:
        raise ConfigError("--labels-only is for black-box attacks (hsj, boundary, transfer)")
    if args.queries is not None and not black:
        raise ConfigError("--queries is the budget of black-box attacks (square, simba, hsj, boundary, fooling)")
    if args.name == "fooling":
        return _fooling(args)
    assert cls is not None or args.name == "transfer"
    options = dict(args.option or [])
    if args.queries is not None and args.name != "transfer":
        options["queries"] = args.queries
    for key in ("norm", "steps", "restarts"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    eps_list = args.eps or [None]
    if args.name == "transfer":
        return _transfer(args, options, eps_list)
    assert cls is not None
    if cls.name == "patch" and args.eps:
        raise ConfigError("a patch has no epsilon: its budget is its area, e.g. -o area=0.1 (10 % of the image)")
    if cls.name != "patch" and (args.surrogate or args.sweep is not None):
        raise ConfigError("--surrogate is an option of patch and transfer, --sweep of patch")
    out = Path(args.out)
    _check_writable(out)
    # build every config first: a bad option fails before any work is done
    try:
        attacks = [get_attack(cls.name, **options, **({} if eps is None else {"eps": eps})) for eps in eps_list]
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    device = resolve_device(args.device)
    model: Any = load_victim(args.model, args.device, args.labels_only) if black else \
        load_classifier(args.model, device=device)[0]
    x, y, index, target, dataset = _images(args, model, str(model.device))
    _say(f"{cls.name} on {index.numel()} {dataset.info.name} [{args.split}] images, model {args.model}")
    if isinstance(attacks[0], AdversarialPatch):
        return run_patch(args, attacks[0], model, dataset, index, x, y, target, out)
    return _run_attacks(args, cls.name, attacks, eps_list, model, dataset, index, x, y, target, out)


def _fooling(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_writable(out)
    model = load_victim(args.model, args.device, args.labels_only)
    dataset = _load(args)
    check_compatible(model, dataset, args.model)  # type: ignore[arg-type]
    return run_fooling(args, model, dataset.info, out, dict(args.option or []))


def _transfer(args: argparse.Namespace, options: dict[str, Any], eps_list: list[Any]) -> int:
    if len(eps_list) > 1:
        raise ConfigError("transfer takes one --eps")
    out = Path(args.out)
    _check_writable(out)
    victim = load_victim(args.model, args.device, args.labels_only)
    x, y, index, target, dataset = _images(args, victim, str(victim.device))
    _say(f"transfer on {index.numel()} {dataset.info.name} [{args.split}] images: crafted on {args.surrogate}, "
         f"victim {args.model}")
    return run_transfer(args, victim, dataset.info, x, y, index, target, out, options, eps_list[0])


def _images(args: argparse.Namespace, model: Any, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                        Any, Any]:
    """The attacked images: the split, class filter, target and seeded sample the options ask for."""
    dataset = _load(args)
    check_compatible(model, dataset, args.model)
    seed_everything(args.seed)
    split = dataset.split(args.split)
    labels = split.labels
    index = torch.arange(len(split))
    info = dataset.info
    if args.only_class is not None:
        index = index[labels == info.class_index(args.only_class)]
    target: Any = None
    if args.target is not None:
        if args.target in ("least-likely", "ll"):
            target = "least-likely"
        else:
            t = info.class_index(args.target)
            if model.task != "multi-label":
                dropped = int((labels[index] == t).sum())
                index = index[labels[index] != t]
                if dropped:
                    _say(f"  skipping {dropped} image(s) already labelled {info.class_names[t]!r} (the target)")
            target = t
    if index.numel() > args.n:  # a seeded random sample: splits are often stored sorted by class
        pick = torch.randperm(index.numel(), generator=torch.Generator().manual_seed(args.seed))[: args.n]
        index = index[pick.sort().values]
    if index.numel() == 0:
        raise ConfigError("no images left to attack (check --only-class, --target and --n)")
    x, y = split.get(index.numpy())
    return x.to(device), y.to(device), index, target, dataset


def _run_attacks(args: argparse.Namespace, name: str, attacks: list[Any], eps_list: list[Any], model: Any,
                 dataset: Any, index: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target: Any,
                 out: Path) -> int:
    info = dataset.info
    device = x.device
    rows: list[dict[str, Any]] = []
    results = []
    craft_x = craft_y = None
    if isinstance(attacks[0], UniversalPerturbation):
        craft = dataset.split(args.craft_split)
        craft_x, craft_y = craft.get(craft.sample_index(args.n_craft, args.seed))
        craft_x, craft_y = craft_x.to(device), craft_y.to(device)
        _say(f"  crafting on {craft_x.shape[0]} {args.craft_split} images, measuring on the {args.split} images")
    for eps, attack in zip(eps_list, attacks, strict=True):
        desc = f"{name}" + ("" if eps is None else f" eps={eps * 255:.3g}/255")
        if isinstance(attack, UniversalPerturbation):
            r = _universal(attack, model, craft_x, craft_y, x, y, args.seed)
            _say(f"  held-out fooling rate (prediction changed) {fmt(r.extras['heldout_fooling_rate'])}, "
                 f"training fooling rate {fmt(r.extras['fooling_history'][-1])}")
        else:
            r = _run_batched(attack, model, x, y, target, args.seed, args.batch_size, desc)
        results.append(r)
        summary = r.summary()
        pc = perceptibility(x.cpu(), r.x_adv.cpu())
        ok = (r.success & r.clean_correct).cpu()
        for k, v in pc.items():
            summary[f"mean_{k}"] = float(v[ok].mean()) if bool(ok.any()) else float("nan")
        if "delta_e" in r.extras:  # few-pixel attacks: how visible the changed pixels are
            de = r.extras["delta_e"].cpu()
            summary["mean_delta_e2000"] = float(de[ok].mean()) if bool(ok.any()) else float("nan")
        summary["eps"] = eps
        summary["eps_255"] = None if eps is None else round(eps * 255, 3)
        rows.append(summary)
        budget = "" if eps is None else f"eps {eps * 255:.3g}/255: "
        _say(f"  {budget}success {fmt(r.success_rate)} of {int(r.clean_correct.sum())} correctly classified, "
             f"robust accuracy {fmt(r.robust_accuracy)}, median L2 {fmt(summary['median_l2'])}, "
             f"SSIM {fmt(summary['mean_ssim'])}, {r.wall_s:.1f} s"
             + (f", changed pixels' CIEDE2000 to their neighbourhood {summary['mean_delta_e2000']:.1f}"
                if "mean_delta_e2000" in summary else ""))
    _write_outputs(out, args, model, info, index, x, y, eps_list, results, rows)
    _say(f"wrote {out}/results.json, adversarial.npz, grid.png")
    return 0


def _write_outputs(out: Path, args: argparse.Namespace, model: Any, info: Any, index: torch.Tensor,
                   x: torch.Tensor, y: torch.Tensor, eps_list: list[Any], results: list[AttackResult],
                   rows: list[dict[str, Any]]) -> None:
    last = results[-1]
    per_image = [
        {"index": int(i), "label": int(lab) if lab.dim() == 0 else lab.tolist(), "eps": eps,
         "success": bool(s), "clean_correct": bool(c), "l2": float(l2), "linf": float(li), "l0": int(l0),
         "gradients": int(g), "queries": int(q)}
        for eps, r in zip(eps_list, results, strict=True)
        for i, lab, s, c, l2, li, l0, g, q in zip(index, y.cpu(), r.success, r.clean_correct, r.l2, r.linf, r.l0,
                                                   r.gradients, r.queries, strict=True)
    ]
    atomic_write_json(out / "results.json", {
        "attack": args.name, "model": str(args.model), "dataset": info.name, "split": args.split,
        "classes": list(info.class_names), "seed": args.seed, "target": args.target, "only_class": args.only_class,
        "summaries": rows, "images": per_image, "environment": environment(),
        "command": command_record(args),
    })
    arrays: dict[str, np.ndarray] = {"index": index.numpy(), "labels": y.cpu().numpy(),
                                     "clean": x.cpu().numpy(), "eps": np.array([e if e is not None else np.nan
                                                                                 for e in eps_list])}
    for k, r in enumerate(results):
        arrays[f"adversarial_{k}"] = r.x_adv.cpu().numpy()
        arrays[f"success_{k}"] = r.success.cpu().numpy()
        arrays[f"adv_pred_{k}"] = r.adv_pred.cpu().numpy()
        for key in ("perturbation", "parameters", "transform_success", "candidate", "delta_e", "front"):
            if key in r.extras:
                arrays[f"{key}_{k}"] = r.extras[key].detach().cpu().numpy()
    with atomic_open(out / "adversarial.npz") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    eps = eps_list[-1]
    title = f"{args.name} on {info.name}" + ("" if eps is None else f", eps {eps * 255:.3g}/255")
    result_grid(out / "grid.png", model, info, x, y, last, title)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("attack", help="run one attack (white-box, black-box, patch, few-pixel) on a model and dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Attacks: " + ", ".join([*attack_names(), *SPECIAL]) + ". Budgets are pixel-space "
                              "epsilons "
                              "written as k/255; several --eps values give a security curve. Success is counted "
                              "on the images the model classified correctly before the attack.")
    p.add_argument("name", help="attack name: " + ", ".join([*attack_names(), *SPECIAL]))
    p.add_argument("--model", "-m", required=True, help="checkpoint (.safetensors, TorchScript or state dict)")
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--eps", type=parse_eps, nargs="+", default=None, metavar="EPS",
                   help="one or more budgets, e.g. 2/255 4/255 8/255 (attacks with a budget only)")
    p.add_argument("--norm", choices=("linf", "l2"), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--restarts", type=int, default=None)
    p.add_argument("--option", "-o", type=_parse_option, action="append", metavar="KEY=VALUE",
                   help="any other attack option, e.g. -o kappa=0.5 -o search_steps=3; a patch kept off a "
                        "region of interest: -o region=outside -o box=TOP,LEFT,BOTTOM,RIGHT")
    p.add_argument("--target", default=None, help="a class name or index, or 'least-likely' (default untargeted)")
    p.add_argument("--only-class", default=None, help="attack only images of this class (e.g. a cancer class)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--craft-split", default="train", choices=("train", "val", "test"),
                   help="uap and patch: the split the universal perturbation or patch is crafted on (default train)")
    p.add_argument("--n-craft", type=int, default=1000, help="uap and patch: images to craft on (default 1000)")
    p.add_argument("--surrogate", default=None, metavar="CKPT",
                   help="patch: also craft the patch on this other model and report its transfer to --model; "
                        "transfer: the model the attack (-o base=pgd) is crafted on")
    p.add_argument("--sweep", type=float, nargs="*", default=None, metavar="AREA",
                   help="patch only: also measure success as the patch grows over these area fractions "
                        f"(default {' '.join(f'{a:g}' for a in DEFAULT_AREAS)})")
    p.add_argument("--queries", type=int, default=None, metavar="N",
                   help="black-box attacks: query budget per image (fooling: in all), the clean query included")
    p.add_argument("--labels-only", action="store_true",
                   help="black-box attacks: the model answers with labels only (decision-based: hsj, boundary)")
    p.add_argument("--n", type=int, default=256, help="number of images to attack (default 256)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default="medfool-attack", help="output folder (default medfool-attack)")
    p.set_defaults(func=cmd_attack)
