"""One attack on a model and dataset, at one or several budgets: ``medfool attack NAME``.

An :class:`AttackJob` says what to run; :func:`run_attack` loads the model and the images,
routes the job by the attack's kind (per-image, universal, or one of the two experiments built
on attacks: transfer and fooling images) and writes OUT/results.json (config, seed, versions,
per-budget summary, perceptibility, per-image rows), OUT/adversarial.npz and OUT/grid.png.
"""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.attacks import attack_class, get_attack
from medfool.attacks.base import Attack, AttackResult, Victim
from medfool.attacks.blackbox.fooling import FoolingConfig, fooling_images
from medfool.attacks.blackbox.transfer import transfer_attack
from medfool.errors import ConfigError
from medfool.eval.perceptibility import perceptibility
from medfool.models import load_classifier
from medfool.models.classifier import Classifier, MetaView
from medfool.models.predict import PredictModel, from_classifier
from medfool.models.remote import RangeClient, connect, is_url
from medfool.report.grid import class_grid
from medfool.runs.chunks import (
    ADAPTIVE_EOT,
    ChunkRunner,
    InProcessChunks,
    VictimSpec,
    attack_chunk,
    choose_runner,
    chunks_of,
)
from medfool.runs.common import (
    Say,
    check_writable,
    fmt,
    match_model_to_data,
    save_result_grid,
    to_log,
)
from medfool.runs.dicom_out import dicom_grids, dicom_sources, native_budgets, on_stored_grid, write_back_dicom
from medfool.runs.images import AttackJob, Images, load_victim, select_images
from medfool.runs.patch import run_patch
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_open, atomic_write_json
from medfool.utils.repro import environment
from medfool.utils.stats import accuracy_breakdown, positive_class

__all__ = ["EXPERIMENTS", "AttackJob", "Images", "load_victim", "robust_breakdown", "run_attack", "select_images"]

log = logging.getLogger("medfool")

EXPERIMENTS = ("fooling", "transfer")
"""Runs built on attacks that are not attacks themselves (no registry entry)."""

def run_attack(job: AttackJob, say: Say = to_log) -> None:
    """Check the job, run it and write its outputs."""
    experiment = job.name in EXPERIMENTS
    try:
        cls = None if experiment else attack_class(job.name)
    except ValueError as exc:
        raise ConfigError(f"{exc}; also: {', '.join(EXPERIMENTS)}") from None
    queries_only = experiment or (cls is not None and cls.queries_only)
    _check_model(job, queries_only)
    if job.name == "fooling":
        return _fooling(job, say)
    options = dict(job.options)
    if job.queries is not None and job.name != "transfer":
        options["queries"] = job.queries
    if job.name == "transfer":
        return _transfer(job, options, say)
    assert cls is not None
    if cls.budget_kind == "area" and job.eps:
        raise ConfigError("a patch has no epsilon: its budget is its area, e.g. -o area=0.1 (10 % of the image)")
    if cls.budget_kind != "area" and (job.surrogate or job.sweep is not None):
        raise ConfigError("--surrogate is an option of patch and transfer, --sweep of patch")
    check_writable(job.out)
    # build every config first: a bad option fails before any work is done
    try:
        attacks = [get_attack(cls.name, **options, **({} if eps is None else {"eps": eps})) for eps in job.budgets]
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    model, client = _victim(job, queries_only)
    images = select_images(job, model, say)
    say(f"{cls.name} on {images.index.numel()} {images.dataset.info.name} [{job.split}] images, model {job.model}")
    if cls.budget_kind == "area":
        run_patch(job, attacks[0], model, images, say)  # type: ignore[arg-type]
        return None
    # universal perturbations answer for the whole batch: no chunks to spread
    spread = attacks[0].kind != "universal"
    if not spread and (job.workers or job.ray_address):
        say(f"note: {cls.name} crafts one perturbation for the whole batch: it runs in this process")
    with choose_runner(job.workers if spread else None, job.ray_address if spread else None, job.threads_per_worker,
                       job.device, say) as runner:
        if isinstance(runner, InProcessChunks):
            runner.models["model"] = model
        else:
            say(f"  chunks of {job.batch_size} images on {runner.where}")
            runner.register("model", VictimSpec(job.model, (resolve_device(job.device).type == "cuda" and "cuda")
                                                or "cpu", job.labels_only, queries_only))
        try:
            return _run_attacks(job, cls.name, attacks, model, images, say, runner, client)
        finally:
            if client is not None:
                client.close()


def _check_model(job: AttackJob, queries_only: bool) -> None:
    """What the model (a URL, an ONNX file, a checkpoint) can be attacked with."""
    if is_url(job.model) and not queries_only:
        raise ConfigError(f"{job.model}: a served model answers queries only; attack it with square, simba, hsj "
                          "or boundary, or as the victim of transfer")
    if is_url(job.model) and (job.workers or job.ray_address):
        raise ConfigError("a served model is attacked from this process (the server takes the load): drop --workers")
    if job.model.endswith(".onnx") and not queries_only:
        raise ConfigError(f"{job.model}: {job.name} needs gradients; an ONNX model can be attacked with "
                          "square, simba, hsj, boundary, fooling, or as the victim of transfer")
    if job.labels_only and not queries_only:
        raise ConfigError("--labels-only is for black-box attacks (hsj, boundary, transfer)")
    if job.queries is not None and not queries_only:
        raise ConfigError("--queries is the budget of black-box attacks (square, simba, hsj, boundary, fooling)")


def _victim(job: AttackJob, queries_only: bool) -> tuple[Victim, RangeClient | None]:
    """The attacked model, and the client counting for it when it is served."""
    if is_url(job.model):
        return connect_range(job)
    if queries_only:
        return load_victim(job.model, job.device, job.labels_only), None
    return load_classifier(job.model, device=resolve_device(job.device))[0], None


def connect_range(job: AttackJob) -> tuple[PredictModel, RangeClient]:
    """The served model at ``job.model`` and the client counting for it; the run is named in the
    server's log by ``job.run_id``, else the output folder's name and a random suffix (two runs
    into folders of the same name stay apart)."""
    import secrets

    run = job.run_id if job.run_id is not None else \
        re.sub(r"[^A-Za-z0-9._-]", "_", job.out.resolve().name)[:55] + "-" + secrets.token_hex(4)
    return connect(job.model, list(job.api_keys), output="labels" if job.labels_only else "probs", run=run)


def client_summary(client: RangeClient, say: Say = to_log) -> dict[str, Any]:
    """The attacker's cost at the range, as results.json keeps it (and said)."""
    st = client.stats
    say(f"  at {client.base}: {st.queries:,} queries in {st.requests:,} requests, {st.refused:,} refused by the "
        f"service's detector, {st.rate_limited} rate-limited ({st.waited_s:.1f} s waited), "
        f"{len(st.spent_keys)} of {len(client.keys)} keys spent")
    return {"url": client.base, "dialect": client.dialect, "run": client.run, "queries": st.queries,
            "answered": st.answered, "refused": st.refused, "requests": st.requests,
            "rate_limited": st.rate_limited, "waited_s": round(st.waited_s, 3), "reconnects": st.reconnects,
            "keys": len(client.keys), "keys_spent": len(st.spent_keys),
            "queries_per_key": [st.per_key.get(i, 0) for i in range(len(client.keys))]}


def _fooling(job: AttackJob, say: Say) -> None:
    check_writable(job.out)
    model = load_victim(job.model, job.device, job.labels_only)
    dataset = job.data.load()
    match_model_to_data(model, dataset, job.model)
    pm = model if isinstance(model, PredictModel) else from_classifier(model)
    try:
        cfg = FoolingConfig(**job.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fooling: {exc}") from None
    queries = job.queries or 300_000
    say(f"evolving fooling images ({cfg.encoding} encoding) for {pm.num_classes} classes, at most {queries:,} "
        "queries in all")
    result = fooling_images(pm, cfg, torch.Generator().manual_seed(job.seed), queries=queries)
    names = pm.class_names
    k, e = result.confidence.shape
    cols = [min(j, e - 1) for j in range(3)]  # the three best images of each class, one row per class
    images = result.images.cpu()
    captions = [tuple(f"{names[i][:18] + ' ' if j == 0 else ''}{float(result.confidence[i, c]):.4f}"
                      for j, c in enumerate(cols)) for i in range(k)]
    out = job.out
    class_grid(out / f"fooling_{cfg.encoding}.png", [images[:, c] for c in cols], captions,
               f"fooling images ({cfg.encoding}) for {dataset.info.name}: model confidence")
    summary = result.summary(names, cfg.threshold)
    with atomic_open(out / f"fooling_{cfg.encoding}.npz") as handle:
        np.savez_compressed(handle, images=result.images.cpu().numpy(),  # type: ignore[arg-type]
                            confidence=result.confidence.cpu().numpy())
    atomic_write_json(out / "results.json", {
        "attack": "fooling", "model": str(job.model), "dataset": dataset.info.name, "seed": job.seed,
        "config": {**cfg.__dict__, "queries": queries}, "summary": summary, "history": result.history,
        "environment": environment(), "command": job.command})
    for name, conf in summary["best_confidence"].items():
        say(f"  {name:<40} {conf:.4f}{'  >= ' + str(cfg.threshold) if conf >= cfg.threshold else ''}")
    say(f"{summary['classes_reached']} of {summary['classes']} classes reach {cfg.threshold:g} confidence, "
        f"{result.queries:,} queries, {result.wall_s:.0f} s -> {out}/fooling_{cfg.encoding}.png")


def _transfer(job: AttackJob, options: dict[str, Any], say: Say) -> None:
    if len(job.eps) > 1:
        raise ConfigError("transfer takes one --eps")
    if not job.surrogate:
        raise ConfigError("transfer needs --surrogate CKPT: the model the attack is crafted on")
    check_writable(job.out)
    victim = load_victim(job.model, job.device, job.labels_only)
    images = select_images(job, victim, say)
    say(f"transfer on {images.index.numel()} {images.dataset.info.name} [{job.split}] images: crafted on "
        f"{job.surrogate}, victim {job.model}")
    x, y, eps = images.x, images.y, job.budgets[0]
    surrogate, _ = load_classifier(job.surrogate, device=str(x.device))
    base = options.pop("base", "pgd")
    try:
        if "early_stop" in {f.name for f in fields(attack_class(base).Config)}:
            # stopping at the surrogate's boundary makes perturbations that barely transfer
            options.setdefault("early_stop", False)
        attack = get_attack(base, **options, **({} if eps is None else {"eps": eps}))
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    try:
        t = transfer_attack(surrogate, victim, x, y, attack, target=images.target,
                            generator=torch.Generator().manual_seed(job.seed))
    except ValueError as exc:
        raise ConfigError(f"{job.surrogate}: {exc}") from None
    s = t.summary()
    say(f"  {base} on the surrogate: success {fmt(s['surrogate_success'])}; on the victim: success "
        f"{fmt(s['victim_success'])}, transfer rate {fmt(s['transfer_rate'])} (fooled on the surrogate -> fooled "
        "on the victim)")
    info = images.dataset.info
    atomic_write_json(job.out / "results.json", {
        "attack": "transfer", "base": base, "model": str(job.model), "surrogate": str(job.surrogate),
        "dataset": info.name, "seed": job.seed, "eps": eps, "summary": s,
        "surrogate_summary": t.on_surrogate.summary(),
        "victim_summary": {**t.on_victim.summary(), "robust_breakdown": robust_breakdown(t.on_victim, y, victim)},
        "images": [{"index": int(i), "surrogate_success": bool(a), "victim_success": bool(b),
                    "victim_clean_correct": bool(c)} for i, a, b, c in
                   zip(images.index, t.on_surrogate.success, t.on_victim.success, t.on_victim.clean_correct,
                       strict=True)],
        "environment": environment(), "command": job.command})
    save_result_grid(job.out / "grid.png", victim, info, x, y, t.on_victim,
                     f"transfer of {base} from {Path(job.surrogate).name} to {Path(str(job.model)).name}")
    say(f"wrote {job.out}/results.json, grid.png")


def robust_breakdown(result: AttackResult, y: torch.Tensor, model: MetaView) -> dict[str, Any]:
    """The robust accuracy of ``result`` broken down (:func:`medfool.utils.stats.accuracy_breakdown`):
    an image counts as correct when the model was right before the attack and the attack failed,
    over every image of the sample; per class (multi-label samples: overall only), balanced, the
    constant-classifier line and, for two classes, robust sensitivity and specificity (positive:
    the model's critical class if it names one, else class 1)."""
    correct = (result.clean_correct & ~result.success).cpu().tolist()
    labels = y.cpu().tolist() if y.dim() == 1 else None
    return accuracy_breakdown(correct, labels, model.class_names,
                              positive=positive_class(model.meta.critical_classes, model.num_classes))


def _run_attacks(job: AttackJob, name: str, attacks: list[Attack], model: Victim, images: Images, say: Say,
                 runner: ChunkRunner, client: RangeClient | None = None) -> None:
    x, y, dataset = images.x, images.y, images.dataset
    device = x.device
    rows: list[dict[str, Any]] = []
    results = []
    craft_x = craft_y = None
    if attacks[0].kind == "universal":
        craft = dataset.split(job.craft_split)
        craft_x, craft_y = craft.get(craft.sample_index(job.n_craft, job.seed))
        craft_x, craft_y = craft_x.to(device), craft_y.to(device)
        say(f"  crafting on {craft_x.shape[0]} {job.craft_split} images, measuring on the {job.split} images")
    sources = dicom_sources(job, images)
    grids = dicom_grids(sources, images, model)
    if grids is not None:
        say("  DICOM data: every adversarial image is snapped to the values its file can store and judged "
            "as the file written back holds it")
    for eps, attack in zip(job.budgets, attacks, strict=True):
        desc = f"{name}" + ("" if eps is None else f" eps={eps * 255:.3g}/255")
        if attack.kind == "universal":
            assert craft_x is not None and craft_y is not None and isinstance(model, Classifier)
            r = attack.craft_and_apply(model, craft_x, craft_y, x, y, seed=job.seed)
            say(f"  held-out fooling rate (prediction changed) {fmt(r.extras['heldout_fooling_rate'])}, "
                f"training fooling rate {fmt(r.extras['fooling_history'][-1])}")
        else:
            if isinstance(model, Classifier) and model.adapts and not attack.queries_only:
                # a defended model: the attacker who knows the defence too, each image's worst case
                say(f"  {desc}: on the deployed gradients and again through the defence (BPDA, EOT "
                    f"{ADAPTIVE_EOT}), each image's worst case, judged as deployed")
            chunks = chunks_of(x, y, images.target, images.index, job.batch_size)
            r = AttackResult.concat(runner.run(partial(attack_chunk, attack), "model", chunks, job.seed, desc))
        if grids is not None:
            assert isinstance(model, Classifier)  # dicom_grids says so
            r = on_stored_grid(r, model, x, y, grids, images.dataset.info.window)
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
        summary["robust_breakdown"] = breakdown = robust_breakdown(r, y, model)
        rows.append(summary)
        budget = "" if eps is None else f"eps {eps * 255:.3g}/255: "
        say(f"  {budget}success {fmt(r.success_rate)} of {int(r.clean_correct.sum())} correctly classified, "
            f"robust accuracy {fmt(r.robust_accuracy)}"
            + (f" (balanced {fmt(breakdown['balanced'])})" if "balanced" in breakdown else "")
            + f", median L2 {fmt(summary['median_l2'])}, "
            f"SSIM {fmt(summary['mean_ssim'])}, {r.wall_s:.1f} s"
            + (f", changed pixels' CIEDE2000 to their neighbourhood {summary['mean_delta_e2000']:.1f}"
               if "mean_delta_e2000" in summary else ""))
    served = client_summary(client, say) if client is not None else None
    _write_outputs(job, model, images, results, rows, sources, served)
    say(f"wrote {job.out}/results.json, adversarial.npz, grid.png")


def _write_outputs(job: AttackJob, model: Victim, images: Images, results: list[AttackResult],
                   rows: list[dict[str, Any]], sources: list[Path] | None, served: dict[str, Any] | None) -> None:
    index, x, y, info, out = images.index, images.x, images.y, images.dataset.info, job.out
    eps_list = job.budgets
    per_image = [
        {"index": int(i), "label": int(lab) if lab.dim() == 0 else lab.tolist(), "eps": eps,
         "success": bool(s), "clean_correct": bool(c), "l2": float(l2), "linf": float(li), "l0": int(l0),
         "gradients": int(g), "queries": int(q), **({"refused": int(r.extras["refused"][j])}
                                                    if "refused" in r.extras else {})}
        for eps, r in zip(eps_list, results, strict=True)
        for j, (i, lab, s, c, l2, li, l0, g, q) in enumerate(zip(index, y.cpu(), r.success, r.clean_correct, r.l2,
                                                                r.linf, r.l0, r.gradients, r.queries, strict=True))
    ]
    native = native_budgets(info.window, eps_list)
    written = (write_back_dicom(job, info.window, results[-1], index, sources)
               if info.window is not None and sources is not None else [])
    atomic_write_json(out / "results.json", {
        "attack": job.name, "model": str(job.model), "dataset": info.name, "split": job.split,
        "classes": list(info.class_names), "seed": job.seed, "target": job.target, "only_class": job.only_class,
        "summaries": rows, "images": per_image, "environment": environment(),
        "command": job.command, **({"native": native} if native else {}),
        **({"dicom": written} if written else {}), **({"range": served} if served else {}),
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
    title = f"{job.name} on {info.name}" + ("" if eps is None else f", eps {eps * 255:.3g}/255")
    save_result_grid(out / "grid.png", model, info, x, y, results[-1], title)
