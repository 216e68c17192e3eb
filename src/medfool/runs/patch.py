"""A universal adversarial patch, measured: ``medfool attack patch``.

The patch is crafted on the crafting split and measured on the attacked images beside two
natural baselines (a real crop of the target class, and of the image's own class, pasted the
same way); optionally its transfer from a surrogate model and a sweep of its size. The crafted
patches and finished sweep rows are units of the folder's ledger (OUT/run.sqlite, keyed by the
fingerprint of the settings that made them), so a rerun with the same settings reuses them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.attacks.base import AttackResult
from medfool.attacks.patch.natural import natural_patch
from medfool.attacks.patch.optimised import AdversarialPatch, Patch
from medfool.attacks.patch.placement import patch_side
from medfool.attacks.patch.sweep import DEFAULT_AREAS, size_sweep
from medfool.attacks.patch.transfer import transfer_patch
from medfool.data.dataset import Dataset
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.report.plots import image_png, line_chart
from medfool.runs.common import Say, fmt, match_model_to_data, save_result_grid
from medfool.runs.images import AttackJob, Images
from medfool.runs.ledger import LEDGER, Ledger
from medfool.utils.io import atomic_open, atomic_write_json
from medfool.utils.repro import environment, file_digest, fingerprint
from medfool.vocab import MULTI_LABEL

__all__ = ["run_patch"]


def _crafted(attack: AdversarialPatch, model: Classifier, craft_x: torch.Tensor, craft_y: torch.Tensor,
             target: int | None, seed: int, path: Path, fp: str, say: Say) -> Patch:
    """The patch for these settings: a finished unit of the folder's ledger, or crafted now;
    ``path`` (patch.npz) is written from it either way."""
    made: list[Patch] = []

    def craft(where: Path) -> None:
        made.append(attack.craft(model, craft_x, craft_y, torch.Generator().manual_seed(seed), target=target))
        made[0].save(where, fp)

    with Ledger.open(path.parent) as ledger:
        if not ledger.file_unit(path.stem, fp, path, craft, "npz"):
            return made[0]
    patch, _ = Patch.load(path)
    say(f"  reusing {path} (crafted earlier with the same settings)")
    return patch.__class__(patch.pixels.to(craft_x.device), patch.mask.to(craft_x.device), patch.target,
                           patch.history)


def _rates(r: AttackResult) -> dict[str, Any]:
    return {"success_rate": r.success_rate, "clean_correct": int(r.clean_correct.sum()), "n": int(r.x_adv.shape[0])}


def run_patch(job: AttackJob, attack: AdversarialPatch, model: Classifier, images: Images, say: Say) -> None:
    """Craft the patch on the crafting split (or reuse the one a previous run made with the same
    settings), measure it on the attacked images beside natural crops, and optionally its
    transfer from a surrogate and its success as it grows (--sweep)."""
    x, y, target, dataset, out = images.x, images.y, images.target, images.dataset, job.out
    if target is not None and not isinstance(target, int):
        raise ConfigError("a patch needs one target class (a name or index), not 'least-likely'")
    if model.task == MULTI_LABEL:
        raise ConfigError("patch attacks support multi-class and binary models")
    if job.sweep is not None and target is None:
        raise ConfigError("--sweep needs --target (the natural-patch baselines are crafted from that class)")
    info = dataset.info
    craft = dataset.split(job.craft_split)
    craft_x, craft_y = craft.get(craft.sample_index(job.n_craft, job.seed))
    craft_x, craft_y = craft_x.to(x.device), craft_y.to(x.device)
    cfg = attack.config
    try:  # every size is checked before any work is done
        k = attack.side(x.shape[2], x.shape[3])
        for a in job.sweep or ():
            patch_side(a, x.shape[2], x.shape[3])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    area = k * k / (x.shape[2] * x.shape[3])
    goal = "untargeted" if target is None else f"target {info.class_names[target]!r}"
    say(f"  {goal}; patch {k}x{k} px ({100 * area:.1f} % of the image, {cfg.shape}), {cfg.steps} steps on "
        f"{craft_x.shape[0]} {job.craft_split} images; measured on the {x.shape[0]} {job.split} images")
    base = {"model": file_digest(job.model), "dataset": info.name, "split_seed": job.data.split_seed,
            "craft_split": job.craft_split, "n_craft": int(craft_x.shape[0]), "config": cfg.to_json(),
            "target": target, "seed": job.seed}
    patch = _crafted(attack, model, craft_x, craft_y, target, job.seed, out / "patch.npz", fingerprint(base), say)
    image_png(out / "patch.png", patch.pixels, alpha=None if cfg.shape == "square" else patch.mask)
    adv = attack.apply(model, patch, x, y, torch.Generator().manual_seed(job.seed + 1))
    summary: dict[str, Any] = {"patch": {**_rates(adv), "side": k, "area": area,
                                         "training_history": patch.history}}
    say(f"  adversarial patch: success {fmt(adv.success_rate)} of {int(adv.clean_correct.sum())} correctly "
        "classified held-out images")
    if target is not None:
        for control in (False, True):
            r = natural_patch(model, craft_x, craft_y, x, y, k, torch.Generator().manual_seed(job.seed + 2),
                              target=target, control=control, shape=cfg.shape)
            summary[r.attack] = _rates(r)
        say(f"  natural {info.class_names[target]} crop: {fmt(summary['natural-patch']['success_rate'])}; "
            f"same-class control: {fmt(summary['natural-patch-control']['success_rate'])}")
    if job.surrogate:
        summary["transfer"] = _transfer(job, attack, model, dataset, craft_x, craft_y, x, y, target, base, say)
    sweep_rows = None
    if job.sweep is not None:
        assert target is not None
        sweep_rows = _sweep(job, attack, model, craft_x, craft_y, x, y, target, base, info.name, say)
    _write_patch_outputs(job, images, model, adv, cfg.to_json(), summary, sweep_rows,
                         f"patch on {info.name}, {goal}, {100 * area:.1f} % of the image", say)


def _write_patch_outputs(job: AttackJob, images: Images, model: Classifier, adv: AttackResult,
                         config: dict[str, Any], summary: dict[str, Any], sweep_rows: list[dict[str, Any]] | None,
                         title: str, say: Say) -> None:
    """results.json (per-image rows), adversarial.npz and grid.png, then the list of what was written."""
    index, x, y, target, info, out = images.index, images.x, images.y, images.target, images.dataset.info, job.out
    assert target is None or isinstance(target, int)
    atomic_write_json(out / "results.json", {
        "attack": "patch", "model": str(job.model), "dataset": info.name, "split": job.split,
        "craft_split": job.craft_split, "classes": list(info.class_names), "seed": job.seed,
        "target": None if target is None else info.class_names[target], "config": config,
        "summary": summary, "sweep": sweep_rows, "environment": environment(),
        "images": [{"index": int(i), "label": int(lab), "success": bool(s), "clean_correct": bool(c),
                    "l0": int(l0)} for i, lab, s, c, l0 in zip(index, y.cpu(), adv.success, adv.clean_correct,
                                                                adv.l0, strict=True)],
        "command": job.command,
    })
    with atomic_open(out / "adversarial.npz") as handle:
        np.savez_compressed(handle, index=index.numpy(), labels=y.cpu().numpy(), clean=x.cpu().numpy(),  # type: ignore[arg-type]
                            adversarial=adv.x_adv.cpu().numpy(), success=adv.success.cpu().numpy(),
                            adv_pred=adv.adv_pred.cpu().numpy(), mask=adv.extras["mask"].cpu().numpy())
    save_result_grid(out / "grid.png", model, info, x, y, adv, title)
    written = ["results.json", "patch.npz", "patch.png", "adversarial.npz", "grid.png"]
    if sweep_rows is not None:
        written += ["sweep.json", "sweep.png"]
    say(f"wrote {out}/" + ", ".join(written))


def _transfer(job: AttackJob, attack: AdversarialPatch, victim: Classifier, dataset: Dataset,
              craft_x: torch.Tensor, craft_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target: int | None,
              base: dict[str, Any], say: Say) -> dict[str, Any]:
    out = job.out
    assert job.surrogate is not None
    surrogate, _ = load_classifier(job.surrogate, device=x.device)
    match_model_to_data(surrogate, dataset, job.surrogate)
    fp = fingerprint({**base, "model": file_digest(job.surrogate)})
    patch = _crafted(attack, surrogate, craft_x, craft_y, target, job.seed, out / "surrogate_patch.npz", fp, say)
    t = transfer_patch(attack, surrogate, victim, craft_x, craft_y, x, y, target=target, seed=job.seed,
                       patch=patch)
    image_png(out / "surrogate_patch.png", patch.pixels, alpha=None if attack.config.shape == "square" else patch.mask)
    say(f"  transfer from {job.surrogate}: success {fmt(t.on_surrogate.success_rate)} on the surrogate, "
        f"{fmt(t.on_victim.success_rate)} on the victim")
    return {"surrogate": str(job.surrogate), **t.summary()}


def _sweep(job: AttackJob, attack: AdversarialPatch, model: Classifier, craft_x: torch.Tensor,
           craft_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target: int, base: dict[str, Any],
           dataset: str, say: Say) -> list[dict[str, Any]]:
    out = job.out
    areas = tuple(job.sweep or ()) or DEFAULT_AREAS
    fp = fingerprint({**base, "config": {**attack.config.to_json(), "area": None},
                      "heldout": int(x.shape[0]), "split": job.split})
    path = out / "sweep.json"
    rows: list[dict[str, Any]] = []
    with Ledger.open(out) as ledger:
        done = {float(a): json.loads(blob) for a in areas if (blob := ledger.get(f"sweep/{float(a)!r}", fp))}
        if done:
            say(f"  sweep: reusing {len(done)} area(s) from {out / LEDGER}")
        rows += list(done.values())

        def save(row: dict[str, Any]) -> None:
            ledger.put(f"sweep/{float(row['area'])!r}", fp, json.dumps(row).encode(), "json")
            rows.append(row)
            atomic_write_json(path, {"fingerprint": fp, "target": target, "rows": rows})
            say(f"  sweep {100 * row['covered']:5.1f} % of the image: adversarial {fmt(row['adversarial'])}, "
                f"natural {fmt(row['natural'])}, control {fmt(row['control'])}")

        result = size_sweep(model, craft_x, craft_y, x, y, target=target, config=attack.config, areas=areas,
                            seed=job.seed, done=done, on_row=save)
    atomic_write_json(path, {"fingerprint": fp, "target": target, "rows": result})
    line_chart(out / "sweep.png", [r["covered"] for r in result],
               {"optimised patch": [r["adversarial"] for r in result],
                "natural crop of the target class": [r["natural"] for r in result],
                "control: crop of the image's own class": [r["control"] for r in result]},
               xlabel="patch area (% of the image)", ylabel="targeted success (held-out)",
               title=f"patch size sweep on {dataset}", percent_x=True, marker_x=0.1, marker_label="10 %")
    return result
