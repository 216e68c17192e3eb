"""Where single pixels matter, and how their change spreads: ``medfool analyze``.

pixel-map: for each image, the largest confidence drop one pixel can cause at every location;
locality: a one-pixel attack, then each successful pixel moved to every pixel at distance 1,
2, 3 ...; propagation: per layer, the channel-summed activation difference between the clean
and the attacked tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medfool.attacks import get_attack
from medfool.attacks.base import AttackResult
from medfool.attacks.fewpixel.maps import locality, map_stride, propagation_map, vulnerability_map
from medfool.data.dataset import Dataset, DatasetInfo
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.report.plots import heatmap_row, line_chart
from medfool.runs.common import DataSource, Say, check_writable, match_model_to_data, to_log
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json
from medfool.utils.progress import progress
from medfool.utils.repro import environment, seed_everything
from medfool.vocab import MULTI_LABEL, Device, SplitName

__all__ = ["KINDS", "AnalysisJob", "run_analysis"]

KINDS = ("pixel-map", "locality", "propagation")


@dataclass(frozen=True)
class AnalysisJob:
    """Everything ``medfool analyze`` needs."""

    kind: str
    model: str
    data: DataSource
    out: Path
    seed: int = 0
    device: Device = "auto"
    split: SplitName = "test"
    n: int = 4
    target: str | None = None
    samples: int = 8
    stride: int = 0  # pixel-map: 0 = automatic (map_stride)
    max_distance: int = 3
    max_images: int = 4
    options: dict[str, Any] = field(default_factory=dict)  # one-pixel attack options
    command: dict[str, Any] = field(default_factory=dict)


def _images(job: AnalysisJob, model: Classifier, dataset: Dataset, target: int | None,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    split = dataset.split(job.split)
    index = torch.as_tensor(split.sample_index(max(4 * job.n, 64), job.seed))
    x, y = split.get(index.numpy())
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        keep = model.predict(x) == y
    if target is not None:
        keep &= y != target
    index, x, y = index[keep.cpu()][: job.n], x[keep][: job.n], y[keep][: job.n]
    if index.numel() == 0:
        raise ConfigError(f"no correctly classified {job.split} images to analyse")
    return index, x, y


def run_analysis(job: AnalysisJob, say: Say = to_log) -> None:
    """Check the job, run the analysis and write its outputs."""
    check_writable(job.out)
    try:
        attack = get_attack("onepixel", **{"pixels": 1, **dict(job.options)})
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    device = resolve_device(job.device)
    model, _ = load_classifier(job.model, device=device)
    if model.task == MULTI_LABEL:
        raise ConfigError("pixel analyses support multi-class and binary models")
    dataset = job.data.load()
    match_model_to_data(model, dataset, job.model)
    seed_everything(job.seed)
    info = dataset.info
    target = None if job.target is None else info.class_index(job.target)
    index, x, y = _images(job, model, dataset, target, device)
    say(f"{job.kind} on {index.numel()} correctly classified {info.name} [{job.split}] images")
    record: dict[str, Any] = {"analysis": job.kind, "model": str(job.model), "dataset": info.name,
                              "split": job.split, "seed": job.seed, "target": job.target,
                              "environment": environment(),
                              "command": job.command}
    if job.kind == "pixel-map":
        _pixel_maps(job, model, info, index, x, y, target, record, say)
        return
    result = attack(model, x, y, target=target, seed=job.seed)
    won = (result.success & result.clean_correct).cpu()
    say(f"  one-pixel attack: {int(won.sum())} of {x.shape[0]} fooled "
        f"(population {attack.config.population}, {attack.config.generations} generations)")  # type: ignore[attr-defined]
    if not bool(won.any()):
        raise ConfigError("the one-pixel attack fooled none of these images: nothing to analyse "
                          "(try more images with --n, or more generations with -o generations=...)")
    cand = result.extras["candidate"][won.to(x.device)]
    tgt = None if target is None else torch.full((int(won.sum()),), target, device=device)
    if job.kind == "locality":
        _locality(job, model, info, x, y, won, cand, tgt, record, say)
    else:
        _propagation(job, model, info, index, x, y, result, won, record, say)


def _pixel_maps(job: AnalysisJob, model: Classifier, info: DatasetInfo, index: torch.Tensor, x: torch.Tensor,
                y: torch.Tensor, target: int | None, record: dict[str, Any], say: Say) -> None:
    """A vulnerability map per image (every pixel tried alone), as PNGs and pixel_map.json."""
    out = job.out
    rows = []
    h, w = x.shape[2], x.shape[3]
    stride = job.stride or map_stride(h, w)
    for i in progress(range(x.shape[0]), desc="pixel maps", unit="image"):
        vm = vulnerability_map(model, x[i:i + 1], y[i:i + 1], target=target, samples=job.samples,
                               seed=job.seed, stride=stride)
        gr, gc = divmod(int(vm.drop.argmax()), vm.drop.shape[1])
        r, c = int(vm.rows[gr]), int(vm.cols[gc])
        heatmap_row(out / f"pixel_map_{i}.png", [("confidence drop", vm.cells(vm.drop, h, w)),
                                                 ("fools alone", vm.cells(vm.fooled.float(), h, w))],
                    image=x[i].cpu(), marks=[(r, c)],
                    title=f"image {int(index[i])} ({info.class_names[int(y[i])]}): "
                          f"{int(vm.fooled.sum())} of {vm.fooled.numel()} {vm.tested} fool alone")
        rows.append({"index": int(index[i]), "label": int(y[i]), "clean_confidence": vm.clean_resistance,
                     "max_drop": float(vm.drop.max()), "best_pixel": [r, c], "stride": stride,
                     "best_colour": vm.colour[gr, gc].tolist(), "fooling_pixels": int(vm.fooled.sum()),
                     "queries": vm.queries, "drop": vm.drop.cpu().tolist()})
        say(f"  image {int(index[i])}: best pixel ({r}, {c}) drops confidence by {float(vm.drop.max()):.3f}; "
             f"{int(vm.fooled.sum())} pixel(s) fool alone")
    record["images"] = rows
    atomic_write_json(out / "pixel_map.json", record)
    say(f"wrote {out}/pixel_map.json and {len(rows)} pixel_map_<i>.png")


def _locality(job: AnalysisJob, model: Classifier, info: DatasetInfo, x: torch.Tensor, y: torch.Tensor,
              won: torch.Tensor, cand: torch.Tensor, tgt: torch.Tensor | None, record: dict[str, Any],
              say: Say) -> None:
    """Whether the successful pixel still fools when moved by growing distances."""
    out = job.out
    rings = locality(model, x[won.to(x.device)], y[won.to(x.device)], cand, target=tgt,
                     max_distance=job.max_distance)
    for ring in rings:
        say(f"  distance {ring['distance']:g}: {ring['success']:.3f} of {ring['positions']:g} moved pixels "
             "still fool")
    record["rows"] = rings
    record["attacked"], record["fooled"] = int(x.shape[0]), int(won.sum())
    atomic_write_json(out / "locality.json", record)
    line_chart(out / "locality.png", [ring["distance"] for ring in rings],
               {"still fooled": [ring["success"] for ring in rings]},
               xlabel="distance from the successful pixel (Chebyshev)", ylabel="success rate",
               title=f"one-pixel locality on {info.name}")
    say(f"wrote {out}/locality.json and locality.png")


def _propagation(job: AnalysisJob, model: Classifier, info: DatasetInfo, index: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor, result: AttackResult, won: torch.Tensor, record: dict[str, Any], say: Say) -> None:
    """How far the one changed pixel's effect spreads through each layer."""
    out = job.out
    rows = []
    fooled_idx = won.nonzero().squeeze(1)[: job.max_images]
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
    say(f"wrote {out}/propagation.json and {len(rows)} propagation_<i>.png")


