"""The audit's units of work: each computes one piece and returns its rows and artifacts.

A unit is a pure function of the model, the audited images and its own seed; the runner
commits what it returns to the store in one transaction. Rows follow
:data:`medfool.eval.store.ROW_FIELDS`.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.attacks.base import Attack, AttackResult
from medfool.attacks.fewpixel.maps import vulnerability_map
from medfool.attacks.passes import Passes
from medfool.attacks.patch.natural import natural_patch
from medfool.attacks.patch.optimised import AdversarialPatch, Patch
from medfool.attacks.poisoning.backdoor import BackdoorConfig
from medfool.attacks.poisoning.triggers import make_trigger
from medfool.data.dataset import Dataset, DatasetInfo, Split
from medfool.defences.evaluation import inference_ms
from medfool.eval.corruptions import Corruption, corrupt
from medfool.eval.perceptibility import perceptibility
from medfool.eval.sanity import model_checks
from medfool.models.classifier import Classifier, logits_to_labels
from medfool.models.metrics import evaluate
from medfool.models.train import TrainConfig
from medfool.report.grid import class_grid
from medfool.report.plots import heatmap_row, image_png
from medfool.runs.audit.config import AuditConfig, BackdoorSection
from medfool.runs.common import save_result_grid
from medfool.runs.defended import Defended, measure_defence
from medfool.runs.poisoning import BackdoorPlan, backdoor_target, retrainable, run_backdoor, trigger_figure
from medfool.utils.io import json_safe
from medfool.utils.rng import ImageStreams
from medfool.utils.stats import positive_class
from medfool.vocab import Preset

__all__ = [
    "Artifact", "Unit", "UnitOutput", "attack_unit", "backdoor_unit", "clean_unit", "corruption_figure_unit",
    "corruption_unit", "defence_unit", "grid_artifact", "load_patch", "map_unit", "patch_apply_unit",
    "patch_craft_unit", "result_rows", "sanity_unit",
]

Artifact = tuple[str, str, bytes]  # name, kind (png | json | npz), bytes
UnitOutput = tuple[list[dict[str, Any]], list[Artifact]]


@dataclass(frozen=True)
class Subject:
    """The audited model and what its outputs mean."""

    model: Classifier
    info: DatasetInfo


@dataclass(frozen=True)
class Chunk:
    """Audited images: their dataset indices (``ids``, the keys of their random streams),
    pixels and labels."""

    ids: list[int]
    x: torch.Tensor
    y: torch.Tensor

    def take(self, which: slice | torch.Tensor) -> Chunk:
        """The images at a slice or at the positions of an index tensor."""
        if isinstance(which, slice):
            return Chunk(self.ids[which], self.x[which], self.y[which])
        return Chunk([self.ids[i] for i in which.tolist()], self.x[which], self.y[which])


NO_PASSES = Passes()


@dataclass(frozen=True)
class Unit:
    """One cell of an audit: a stage (and its attack and budget) on one chunk of images. Its
    randomness comes from its own seed (``unit_seed``), so it computes the same rows in any
    process. ``after`` names a unit whose result it reads, ``needs`` the artifact of that unit
    (the patch it applies) a worker is sent with it; ``local`` units write files in the run's
    folder and run in the driver's process."""

    name: str
    stage: str
    run: Callable[[torch.Generator], UnitOutput]
    cost: Passes | None = NO_PASSES  # the most model passes it can take (None: not known in advance)
    after: str | None = None
    needs: str | None = None
    local: bool = False


def result_rows(stage: str, budget: str, ids: list[int], x: torch.Tensor, y: torch.Tensor,
                r: AttackResult) -> list[dict[str, Any]]:
    """One store row per image of an attack result, perceptibility included."""
    pc = {k: v.tolist() for k, v in perceptibility(x.cpu(), r.x_adv.cpu()).items()}
    single = y.dim() == 1
    per_image = r.wall_s / max(1, len(ids))
    rows = []
    for j, image in enumerate(ids):
        rows.append({
            "stage": stage, "attack": r.attack, "budget": budget, "image": image,
            "label": int(y[j]) if single else None,
            "clean_pred": int(r.clean_pred[j]) if single else None,
            "adv_pred": int(r.adv_pred[j]) if single else None,
            "clean_correct": int(r.clean_correct[j]), "success": int(r.success[j]),
            "l0": float(r.l0[j]), "l2": float(r.l2[j]), "linf": float(r.linf[j]),
            "psnr": json_safe(pc["psnr"][j]), "ssim": json_safe(pc["ssim"][j]),
            "ciede2000": json_safe(pc["ciede2000"][j]),
            "queries": int(r.queries[j]), "gradients": int(r.gradients[j]), "time_s": per_image})
    return rows


def _png_bytes(write: Callable[[Path], Any]) -> bytes:
    """Run a function that writes a PNG to a path, return the bytes (figures go into the store)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        write(path)
        return path.read_bytes()


def grid_artifact(name: str, model: Classifier, info: DatasetInfo, x: torch.Tensor, y: torch.Tensor,
                  r: AttackResult, title: str) -> Artifact:
    return (name, "png", _png_bytes(lambda p: save_result_grid(p, model, info, x, y, r, title, rows=6)))


# -- units ------------------------------------------------------------------------------------
def clean_unit(subject: Subject, split: Split, images: Chunk, batch: int) -> Callable[[torch.Generator], UnitOutput]:
    model, ids, x, y = subject.model, images.ids, images.x, images.y

    def run(_gen: torch.Generator) -> UnitOutput:
        start = time.perf_counter()
        metrics = evaluate(model, split)
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
        pred = logits_to_labels(logits, model.task)
        single = y.dim() == 1
        correct = pred == y if single else (pred == y).all(dim=1)
        rows = []
        for j, image in enumerate(ids):
            p = int(pred[j]) if single else None
            rows.append({"stage": "clean", "attack": "clean", "budget": "-", "image": image,
                         "label": int(y[j]) if single else None, "clean_pred": p, "adv_pred": p,
                         "clean_correct": int(correct[j]), "success": 0, "l0": 0.0, "l2": 0.0, "linf": 0.0,
                         "queries": 1, "gradients": 0, "time_s": 0.0})
        metrics["wall_s"] = time.perf_counter() - start
        return rows, [("clean", "json", json.dumps(metrics).encode())]

    return run


def sanity_unit(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Generator], UnitOutput]:
    def run(_gen: torch.Generator) -> UnitOutput:
        return [], [("sanity-model", "json", json.dumps(model_checks(model, x, y)).encode())]

    return run


def attack_unit(stage: str, attack: Attack, budget: str, subject: Subject, images: Chunk,
                grid: str | None, seed: int, members: str | None = None,
                adaptive_eot: int | None = None) -> Callable[[torch.Generator], UnitOutput]:
    """One attack (built once by the plan, which also read its cost) on one chunk of images.
    ``seed`` is the attack's at this budget, the same for every chunk: with the images' dataset
    indices as their ids, each image draws the same random numbers whichever chunk it falls in.
    ``members`` names a JSON artifact for an ensemble's record of which member broke each image.
    ``adaptive_eot`` (a defended model): the attack also runs on the adaptive view (BPDA,
    surrogates, EOT with that many draws), and each image's row is the worst case of the naive
    and the adaptive attacker, judged as deployed."""
    model, info, ids, x, y = subject.model, subject.info, images.ids, images.x, images.y

    def run(_gen: torch.Generator) -> UnitOutput:
        r = attack(model, x, y, seed=seed, ids=ids)
        if adaptive_eot is not None:
            with model.adaptive(eot=adaptive_eot) as view:
                r = AttackResult.worst_of([r, attack(view, x, y, seed=seed, ids=ids)])
        artifacts = []
        if grid is not None:
            artifacts.append(grid_artifact(grid, model, info, x, y, r, f"{attack.name} {budget} on {info.name}"))
        if members is not None and "broken_by" in r.extras:
            record = {"budget": budget, "members": r.extras["members"],
                      "broken_by": dict(zip(ids, r.extras["broken_by"].tolist(), strict=True))}
            artifacts.append((members, "json", json.dumps(record).encode()))
        return result_rows(stage, budget, ids, x, y, r), artifacts

    return run


def corruption_unit(model: Classifier, images: Chunk, corruption: Corruption, severities: tuple[int, ...],
                    seed: int) -> Callable[[torch.Generator], UnitOutput]:
    """Accuracy under one corruption at each severity, stored as an attack's rows (success: the
    corrupted image is misread), so robust accuracy is the accuracy under the corruption."""
    ids, x, y = images.ids, images.x, images.y

    def run(_gen: torch.Generator) -> UnitOutput:
        rows: list[dict[str, Any]] = []
        for s in severities:
            start = time.perf_counter()
            streams = ImageStreams(seed + s, torch.tensor(ids), x.device)
            with model.padded():
                xc = corrupt(x, corruption, s, streams.rows(torch.arange(len(ids))))
                r = AttackResult.measure(corruption.name, {"severity": s}, model, x, xc, y, queries=1,
                                         wall_s=time.perf_counter() - start)
            rows += result_rows("corruption", f"severity {s}", ids, x, y, r)
        return rows, []

    return run


def corruption_figure_unit(x: torch.Tensor, image: int, corruptions: tuple[Corruption, ...],
                           severities: tuple[int, ...],
                           seeds: dict[str, int]) -> Callable[[torch.Generator], UnitOutput]:
    """One tile under every corruption and severity (rows: corruptions; columns: clean, severities),
    drawn with the corruption units' seeds: the pictures are the images that were classified."""
    def run(_gen: torch.Generator) -> UnitOutput:
        k = len(corruptions)
        columns = [x.expand(k, -1, -1, -1).cpu()]
        for s in severities:
            columns.append(torch.cat([corrupt(x, c, s, ImageStreams(seeds[c.name] + s, torch.tensor([image]), x.device)
                                              .rows(torch.arange(1))) for c in corruptions]).cpu())
        captions = [(c.name, *[f"severity {s}" for s in severities]) for c in corruptions]
        png = _png_bytes(lambda p: class_grid(p, columns, captions, f"tile {image}: clean | severities"))
        return [], [("corruptions-png", "png", png)]

    return run


def patch_craft_unit(attack: AdversarialPatch, model: Classifier, craft_x: torch.Tensor, craft_y: torch.Tensor,
                     target: int) -> Callable[[torch.Generator], UnitOutput]:
    def run(gen: torch.Generator) -> UnitOutput:
        start = time.perf_counter()
        patch = attack.craft(model, craft_x, craft_y, gen, target)
        buf = io.BytesIO()
        np.savez(buf, pixels=patch.pixels.cpu().numpy(), mask=patch.mask.cpu().numpy(),
                 history=np.array(patch.history), wall_s=np.array(time.perf_counter() - start))
        png = _png_bytes(lambda p: image_png(p, patch.pixels, scale=12))
        return [], [("patch-npz", "npz", buf.getvalue()), ("patch-png", "png", png)]

    return run


def load_patch(data: bytes, target: int, device: torch.device) -> Patch:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return Patch(torch.from_numpy(f["pixels"]).to(device), torch.from_numpy(f["mask"]).to(device), target,
                     f["history"].tolist())


def patch_apply_unit(attack: AdversarialPatch, patch_bytes: Callable[[], bytes], subject: Subject,
                     pool_x: torch.Tensor, pool_y: torch.Tensor, images: Chunk, target: int, budget: str,
                     grid: str | None) -> Callable[[torch.Generator], UnitOutput]:
    """Paste the crafted patch on held-out images, next to a natural crop of the target class."""
    model, info, ids, x, y = subject.model, subject.info, images.ids, images.x, images.y

    def run(gen: torch.Generator) -> UnitOutput:
        patch = load_patch(patch_bytes(), target, x.device)
        r = attack.apply(model, patch, x, y, gen)
        nat = natural_patch(model, pool_x, pool_y, x, y, patch.pixels.shape[-1], gen, target=target)
        rows = result_rows("patch", budget, ids, x, y, r) + result_rows("patch", budget, ids, x, y, nat)
        artifacts = []
        if grid is not None:
            title = f"patch ({budget}) -> {info.class_names[target]}"
            artifacts.append(grid_artifact(grid, model, info, x, y, r, title))
        return rows, artifacts

    return run


def map_unit(subject: Subject, tile: Chunk, samples: int, seed: int,
             stride: int = 1) -> Callable[[torch.Generator], UnitOutput]:
    """A single-pixel vulnerability map of one tile: every pixel, or every ``stride``-th row and
    column (each tested pixel drawn as its stride x stride cell)."""
    model, info, image, x, y = subject.model, subject.info, tile.ids[0], tile.x, tile.y

    def run(_gen: torch.Generator) -> UnitOutput:
        start = time.perf_counter()
        vm = vulnerability_map(model, x, y, samples=samples, seed=seed, stride=stride)
        fooled = int(vm.fooled.sum())
        total = vm.fooled.numel()
        label = info.class_names[int(y[0])] if y.dim() == 1 else "multi-label"
        title = f"tile {image} ({label}): {fooled} of {total} {vm.tested} flip it alone"
        h, w = x.shape[-2:]
        png = _png_bytes(lambda p: heatmap_row(p, [("confidence drop", vm.cells(vm.drop, h, w)),
                                                   ("flips alone", vm.cells(vm.fooled.float(), h, w))],
                                               image=x[0], title=title))
        summary = {"image": image, "label": label, "fooled_pixels": fooled, "pixels": total, "stride": stride,
                   "queries": vm.queries, "clean_resistance": vm.clean_resistance,
                   "wall_s": time.perf_counter() - start}
        return [], [(f"map-{image:06d}-png", "png", png),
                    (f"map-{image:06d}-json", "json", json.dumps(summary).encode())]

    return run


def backdoor_retrains(bd: BackdoorSection) -> tuple[str, ...]:
    """The detectors the backdoor unit retrains after (each one model more to train)."""
    return tuple(d for d in retrainable(bd.detectors) if d != "neural-cleanse") if bd.retrain else ()


def backdoor_unit(model: Classifier, dataset: Dataset, cfg: AuditConfig,
                  workdir: Path) -> Callable[[torch.Generator], UnitOutput]:
    """Retrain the audited model's architecture on a poisoned copy of its training set (and a
    clean copy, same seed), then run the backdoor detectors. Models are kept in ``workdir``, so an
    interrupted audit resumes this unit model by model."""

    def run(_gen: torch.Generator) -> UnitOutput:
        bd, info = cfg.backdoor, dataset.info
        train = dataset.split("train")
        trigger = make_trigger(bd.trigger, train.image_shape, seed=cfg.seed)
        target = backdoor_target(info, bd.target, model.meta.critical_classes)
        train_cfg = TrainConfig(arch=model.meta.arch or "small_cnn", arch_kwargs=dict(model.meta.arch_kwargs),
                                epochs=bd.epochs or None, seed=cfg.seed)
        plan = BackdoorPlan(detectors=bd.detectors, retrain=backdoor_retrains(bd))
        result = run_backdoor(dataset, trigger, BackdoorConfig(rate=bd.rate, target=target), train_cfg, plan,
                              workdir, device=model.device, seed=cfg.seed)
        figure = _png_bytes(lambda p: trigger_figure(p, dataset, trigger, cfg.seed))
        blob = json.dumps(result, default=str).encode()
        return [], [("backdoor-json", "json", blob), ("backdoor-trigger", "png", figure)]

    return run


def _silent(_line: str) -> None:
    """The audit's units report through the progress bar and the report, not line by line."""


def defence_unit(slug: str, defended: Defended, audited: Classifier, split: Split, images: Chunk,
                 eps: tuple[float, ...], preset: Preset, eot: int,
                 seed: int) -> Callable[[torch.Generator], UnitOutput]:
    """One defence at every budget (``eps`` in k/255), measured as ``medfool defend evaluate``
    measures it (:func:`medfool.runs.defended.measure_defence`), beside the audited model's clean
    accuracy where the defence is another model."""

    def run(_gen: torch.Generator) -> UnitOutput:
        same = defended.model is audited
        names = audited.class_names
        report = measure_defence(defended, split, images.x, images.y, images.ids, [e / 255 for e in eps],
                                 names=names, positive=positive_class(audited.meta.critical_classes, len(names)),
                                 preset=preset, seed=seed, eot=eot,
                                 baseline_clean=None if same else evaluate(audited, split)["accuracy"],
                                 baseline_infer_ms=inference_ms(audited, images.x), say=_silent)
        return [], [(f"defence-{slug}", "json", json.dumps(json_safe(report)).encode())]

    return run
