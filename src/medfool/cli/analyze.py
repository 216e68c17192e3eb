"""``medfool analyze``: where single pixels matter, and how their change spreads.

  pixel-map    for each image, the largest confidence drop one pixel can cause at every
               location (all locations x the colour-cube corners and random colours)
               -> pixel_map_<i>.png (tile | drop heatmap | pixels that alone fool), pixel_map.json
  locality     one-pixel attack on the images, then each successful pixel moved to every pixel
               at distance 1, 2, 3 ...: how often it still fools  -> locality.json, locality.png
  propagation  one-pixel attack, then per layer the channel-summed activation difference
               between clean and attacked tile  -> propagation_<i>.png, propagation.json

Only images the model classifies correctly are analysed. Confidence is the model's
probability of the true class (or one minus the target's with --target).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from medfool.attacks import get_attack
from medfool.attacks.fewpixel.maps import locality, propagation_map, vulnerability_map
from medfool.cli.attack import _parse_option
from medfool.cli.commands import _check_writable, _load, _say, check_compatible
from medfool.cli.common import add_data_options, add_run_options, command_record
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.report.plots import heatmap_row, line_chart
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json
from medfool.utils.progress import progress
from medfool.utils.repro import environment, seed_everything

KINDS = ("pixel-map", "locality", "propagation")


def _images(args: argparse.Namespace, model: Any, dataset: Any, target: int | None,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    split = dataset.split(args.split)
    index = torch.as_tensor(split.sample_index(max(4 * args.n, 64), args.seed))
    x, y = split.get(index.numpy())
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        keep = model.predict(x) == y
    if target is not None:
        keep &= y != target
    index, x, y = index[keep.cpu()][: args.n], x[keep][: args.n], y[keep][: args.n]
    if index.numel() == 0:
        raise ConfigError(f"no correctly classified {args.split} images to analyse")
    return index, x, y


def cmd_analyze(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_writable(out)
    options = dict(args.option or [])
    try:
        attack = get_attack("onepixel", **{"pixels": 1, **options})
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    device = resolve_device(args.device)
    model, _ = load_classifier(args.model, device=device)
    if model.task == "multi-label":
        raise ConfigError("pixel analyses support multi-class and binary models")
    dataset = _load(args)
    check_compatible(model, dataset, args.model)
    seed_everything(args.seed)
    info = dataset.info
    target = None if args.target is None else info.class_index(args.target)
    index, x, y = _images(args, model, dataset, target, device)
    _say(f"{args.kind} on {index.numel()} correctly classified {info.name} [{args.split}] images")
    record: dict[str, Any] = {"analysis": args.kind, "model": str(args.model), "dataset": info.name,
                              "split": args.split, "seed": args.seed, "target": args.target,
                              "environment": environment(),
                              "command": command_record(args)}
    if args.kind == "pixel-map":
        rows = []
        for i in progress(range(x.shape[0]), desc="pixel maps", unit="image"):
            vm = vulnerability_map(model, x[i:i + 1], y[i:i + 1], target=target, samples=args.samples,
                                   seed=args.seed)
            r, c = divmod(int(vm.drop.argmax()), x.shape[3])
            heatmap_row(out / f"pixel_map_{i}.png", [("confidence drop", vm.drop), ("fools alone", vm.fooled.float())],
                        image=x[i].cpu(), marks=[(r, c)],
                        title=f"image {int(index[i])} ({info.class_names[int(y[i])]}): "
                              f"{int(vm.fooled.sum())} of {vm.fooled.numel()} pixels fool alone")
            rows.append({"index": int(index[i]), "label": int(y[i]), "clean_confidence": vm.clean_resistance,
                         "max_drop": float(vm.drop.max()), "best_pixel": [r, c],
                         "best_colour": vm.colour[r, c].tolist(), "fooling_pixels": int(vm.fooled.sum()),
                         "queries": vm.queries, "drop": vm.drop.cpu().tolist()})
            _say(f"  image {int(index[i])}: best pixel ({r}, {c}) drops confidence by {float(vm.drop.max()):.3f}; "
                 f"{int(vm.fooled.sum())} pixel(s) fool alone")
        record["images"] = rows
        atomic_write_json(out / "pixel_map.json", record)
        _say(f"wrote {out}/pixel_map.json and {len(rows)} pixel_map_<i>.png")
        return 0

    result = attack(model, x, y, target=target, seed=args.seed)
    won = (result.success & result.clean_correct).cpu()
    _say(f"  one-pixel attack: {int(won.sum())} of {x.shape[0]} fooled "
         f"(population {attack.config.population}, {attack.config.generations} generations)")  # type: ignore[attr-defined]
    if not bool(won.any()):
        raise ConfigError("the one-pixel attack fooled none of these images: nothing to analyse "
                          "(try more images with --n, or more generations with -o generations=...)")
    cand = result.extras["candidate"][won.to(x.device)]
    tgt = None if target is None else torch.full((int(won.sum()),), target, device=device)
    if args.kind == "locality":
        rings = locality(model, x[won.to(x.device)], y[won.to(x.device)], cand, target=tgt,
                         max_distance=args.max_distance)
        for ring in rings:
            _say(f"  distance {ring['distance']:g}: {ring['success']:.3f} of {ring['positions']:g} moved pixels "
                 "still fool")
        record["rows"] = rings
        record["attacked"], record["fooled"] = int(x.shape[0]), int(won.sum())
        atomic_write_json(out / "locality.json", record)
        line_chart(out / "locality.png", [ring["distance"] for ring in rings],
                   {"still fooled": [ring["success"] for ring in rings]},
                   xlabel="distance from the successful pixel (Chebyshev)", ylabel="success rate",
                   title=f"one-pixel locality on {info.name}")
        _say(f"wrote {out}/locality.json and locality.png")
        return 0

    rows = []
    fooled_idx = won.nonzero().squeeze(1)[: args.max_images]
    for j, i in enumerate(fooled_idx.tolist()):
        maps = propagation_map(model, x[i:i + 1], result.x_adv[i:i + 1])
        pos = result.extras["candidate"][i, 0, :2].floor().long().tolist()
        heatmap_row(out / f"propagation_{j}.png", [(f"layer {name}", m) for name, m in maps],
                    image=result.x_adv[i].cpu(), marks=[tuple(pos)],
                    title=f"image {int(index[i])}: {info.class_names[int(y[i])]} -> "
                          f"{info.class_names[int(result.adv_pred[i])]}")
        rows.append({"index": int(index[i]), "pixel": pos, "layers": [
            {"layer": name, "shape": list(m.shape), "total": float(m.sum()), "max": float(m.max()),
             "changed_share": float((m > 1e-6).float().mean())} for name, m in maps]})
    record["images"] = rows
    atomic_write_json(out / "propagation.json", record)
    _say(f"wrote {out}/propagation.json and {len(rows)} propagation_<i>.png")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("analyze", help="pixel vulnerability maps, locality and propagation maps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS, help="pixel-map, locality or propagation")
    p.add_argument("--model", "-m", required=True, help="checkpoint (.safetensors, TorchScript or state dict)")
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--n", type=int, default=4, help="images to analyse (default 4)")
    p.add_argument("--target", default=None, help="a class name or index (default: away from the true class)")
    p.add_argument("--samples", type=int, default=8,
                   help="pixel-map: random colours tried at each location besides the cube's corners (default 8)")
    p.add_argument("--max-distance", type=int, default=3, help="locality: largest distance (default 3)")
    p.add_argument("--max-images", type=int, default=4, help="propagation: images drawn (default 4)")
    p.add_argument("--option", "-o", type=_parse_option, action="append", metavar="KEY=VALUE",
                   help="one-pixel attack options for locality and propagation, e.g. -o generations=30")
    p.add_argument("--out", default="medfool-analyze", help="output folder (default medfool-analyze)")
    p.set_defaults(func=cmd_analyze)
