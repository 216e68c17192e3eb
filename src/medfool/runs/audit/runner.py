"""Plan an audit as units, run the ones the store does not have yet, then render the report.

The plan is a pure function of the config, the model and the audited images, so a rerun of
the same command finds the same unit names and does only what is missing. Settings are
fingerprinted: a store made with other settings is never silently mixed with this run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medfool import __version__
from medfool.attacks import attack_class, get_attack
from medfool.attacks.base import Attack
from medfool.attacks.fewpixel.maps import map_queries, map_stride
from medfool.attacks.passes import Passes
from medfool.attacks.patch.optimised import AdversarialPatch
from medfool.attacks.patch.optimised import PatchConfig as PatchAttackConfig
from medfool.data.dataset import Dataset, DatasetInfo, benign_class
from medfool.errors import ConfigError, DataError, MedfoolError
from medfool.eval.corruptions import corruptions_for
from medfool.eval.store import ResultStore, unit_seed
from medfool.models.classifier import Classifier
from medfool.models.train import auto_epochs
from medfool.report.html import render
from medfool.runs.audit.cells import Done, Executor, InProcess
from medfool.runs.audit.config import AuditConfig, DefenceSection
from medfool.runs.audit.cost import attack_cost, attack_passes, measure_speed, plan_lines, weights
from medfool.runs.audit.units import (
    Chunk,
    Subject,
    Unit,
    attack_unit,
    backdoor_retrains,
    backdoor_unit,
    clean_unit,
    corruption_figure_unit,
    corruption_unit,
    defence_unit,
    map_unit,
    patch_apply_unit,
    patch_craft_unit,
    sanity_unit,
)
from medfool.runs.common import Say, check_outputs, folder_lock, to_log
from medfool.runs.defended import defences_named
from medfool.utils.io import remove_stray_parts
from medfool.utils.progress import progress
from medfool.utils.repro import environment, file_digest, fingerprint
from medfool.vocab import MULTI_LABEL, Task

__all__ = [
    "STORE", "audit_images", "estimate_audit", "map_images", "model_digest", "open_store", "patch_target", "plan",
    "run_audit", "settings_fingerprint", "stage_rows",
]

log = logging.getLogger("medfool")
STORE = "audit.sqlite"


def patch_target(info: DatasetInfo, cfg: AuditConfig, model: Classifier) -> int | None:
    """The patch's target class: the configured one, or a benign / normal class (the dangerous
    direction is a cancer tile read as benign); None when the audit has no patch stage."""
    if not cfg.patch.enabled or model.task == MULTI_LABEL:
        return None
    if cfg.patch.target != "auto":
        return int(info.class_index(cfg.patch.target))
    return benign_class(info.class_names, model.meta.critical_classes)


def audit_images(dataset: Dataset, cfg: AuditConfig) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    if cfg.split not in dataset.splits:
        raise DataError(f"{dataset.info.name} has no {cfg.split!r} split (it has: {', '.join(dataset.splits)})")
    split = dataset.split(cfg.split)
    if len(split) == 0:
        raise DataError(f"{dataset.info.source or dataset.info.name}: the {cfg.split} split is empty")
    index = split.sample_index(cfg.n, cfg.seed)
    x, y = split.get(index)
    return [int(i) for i in index], x, y


def _supported(name: str, task: Task, skipped: list[str]) -> bool:
    if task in attack_class(name).tasks:
        return True
    skipped.append(f"{name} (does not support {task} models)")
    return False


@dataclass
class _Stages:
    """What every stage's planning reads: the model, data, config and audited images (cut into
    chunks of one batch), and the list of what was left out, which the stages add to."""

    model: Classifier
    dataset: Dataset
    cfg: AuditConfig
    images: Chunk
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        b = self.cfg.batch_size
        self.chunks = [(k, slice(s, s + b)) for k, s in enumerate(range(0, len(self.images.ids), b))]
        self.subject = Subject(self.model, self.dataset.info)
        # a defended audited model: every white-box row is the worst case of the naive and the
        # adaptive attacker (its headline, curve and flip matrix are what an attacker who knows it gets)
        self.eot = self.cfg.defence.eot if self.model.adapts else None
        self.views = 1 + ((self.cfg.defence.eot if self.model.randomised else 1) if self.model.adapts else 0)

    def supported(self, name: str) -> bool:
        return _supported(name, self.model.task, self.skipped)

    def size(self, sl: slice | torch.Tensor) -> int:
        return len(self.images.ids[sl]) if isinstance(sl, slice) else sl.numel()

    def passes(self, attack: Attack, n: int) -> Passes | None:
        """An attack's passes on ``n`` images, times the views of a defended model."""
        cost = attack_cost(attack, self.model, n)
        return None if cost is None else cost * self.views


def plan(model: Classifier, dataset: Dataset, cfg: AuditConfig, ids: list[int], x: torch.Tensor,
         y: torch.Tensor, patch_bytes: Callable[[], bytes], target: int | None, out: Path | None = None
         ) -> tuple[list[Unit], list[str]]:
    """Every unit of the audit, in running order, and what was left out and why. ``target`` is
    the patch's target class (:func:`patch_target`; None: no patch stage)."""
    st = _Stages(model, dataset, cfg, Chunk(ids, x, y))
    units = [*_clean_units(st), *_corruption_units(st), *_whitebox_units(st), *_blackbox_units(st),
             *_patch_units(st, patch_bytes, target), *_onepixel_units(st), *_map_units(st),
             *defence_units(model, dataset, cfg, st.images), *_backdoor_units(st, out)]
    return units, st.skipped


def _clean_units(st: _Stages) -> list[Unit]:
    ids, x, y, b = st.images.ids, st.images.x, st.images.y, st.cfg.batch_size
    split = st.dataset.split(st.cfg.split)
    return [Unit("clean", "clean evaluation", clean_unit(st.subject, split, st.images, b),
                   Passes(forwards=len(split) + len(ids))),
            Unit("sanity", "sanity checks", sanity_unit(st.model, x[:b], y[:b]),
                   Passes(gradients=min(b, len(ids)), forwards=3 * min(b, len(ids))))]


def _corruption_units(st: _Stages) -> list[Unit]:
    cc, x, units = st.cfg.corruptions, st.images.x, []
    if not cc.enabled:
        return []
    modality = corruptions_for(x.shape[1])
    chosen = tuple(c for c in modality if not cc.kinds or c.name in cc.kinds)
    for name in [k for k in cc.kinds if k not in {c.name for c in modality}]:
        st.skipped.append(f"corruption {name} (not for {x.shape[1]}-channel images)")
    seeds = {c.name: unit_seed(st.cfg.seed, f"corruption/{c.name}") for c in chosen}
    for c in chosen:
        for k, sl in st.chunks:
            units.append(Unit(f"corruption/{c.name}/{k}", "natural variation", corruption_unit(
                st.model, st.images.take(sl), c, cc.severities, seeds[c.name]),
                Passes(forwards=2 * len(cc.severities) * st.size(sl))))
    if chosen:
        units.append(Unit("corruption/figure", "natural variation", corruption_figure_unit(
            x[:1], st.images.ids[0], chosen, cc.severities, seeds)))
    return units


def _whitebox_units(st: _Stages) -> list[Unit]:
    wb, seed, units = st.cfg.whitebox, st.cfg.seed, []
    if not wb.enabled:
        return []
    for name in [a for a in wb.attacks if st.supported(a)]:
        for eps in wb.eps:
            opts: dict[str, Any] = {"eps": eps / 255}
            if name != "fgsm":
                opts["steps"] = wb.steps
            attack = get_attack(name, **opts)
            for k, sl in st.chunks:
                units.append(Unit(f"whitebox/{name}/{eps:g}/{k}", f"white-box {name}", attack_unit(
                    "whitebox", attack, f"{eps:g}/255", st.subject, st.images.take(sl),
                    f"grid-whitebox-{name}-{eps:g}" if k == 0 and eps == wb.eps[-1] else None,
                    unit_seed(seed, f"whitebox/{name}/{eps:g}"), adaptive_eot=st.eot),
                    st.passes(attack, st.size(sl))))
    if wb.ensemble != "off" and st.supported("ensemble"):
        for eps in wb.eps:
            ensemble = get_attack("ensemble", eps=eps / 255, preset=wb.ensemble)
            for k, sl in st.chunks:
                units.append(Unit(f"whitebox/ensemble/{eps:g}/{k}", "white-box ensemble", attack_unit(
                    "whitebox", ensemble, f"{eps:g}/255", st.subject, st.images.take(sl),
                    "grid-whitebox-ensemble" if k == 0 and eps == wb.eps[-1] else None,
                    unit_seed(seed, f"whitebox/ensemble/{eps:g}"), members=f"members-{eps:g}-{k}",
                    adaptive_eot=st.eot), st.passes(ensemble, st.size(sl))))
    for name in [a for a in wb.minimal if st.supported(a)]:
        minimal = get_attack(name)
        for k, sl in st.chunks:
            units.append(Unit(f"minimal/{name}/{k}", f"minimal {name}", attack_unit(
                "minimal", minimal, "minimal", st.subject, st.images.take(sl),
                f"grid-minimal-{name}" if k == 0 else None, unit_seed(seed, f"minimal/{name}"),
                adaptive_eot=st.eot), st.passes(minimal, st.size(sl))))
    return units


def _blackbox_units(st: _Stages) -> list[Unit]:
    bb, units = st.cfg.blackbox, []
    if not bb.enabled:
        return []
    for name in [a for a in bb.attacks if st.supported(a)]:
        for eps in st.cfg.whitebox.eps:
            attack = get_attack(name, **{"eps": eps / 255, ("tries" if name == "noise" else "queries"): bb.queries})
            for k, sl in st.chunks:
                units.append(Unit(f"blackbox/{name}/{eps:g}/{k}", f"black-box {name}", attack_unit(
                    "blackbox", attack, f"{eps:g}/255", st.subject, st.images.take(sl), None,
                    unit_seed(st.cfg.seed, f"blackbox/{name}/{eps:g}")),
                    attack_cost(attack, st.model, st.size(sl))))
    return units


def _patch_units(st: _Stages, patch_bytes: Callable[[], bytes], target: int | None) -> list[Unit]:
    pc, x, y, b = st.cfg.patch, st.images.x, st.images.y, st.cfg.batch_size
    if pc.enabled and st.model.task == MULTI_LABEL:
        st.skipped.append("patch (a universal patch targets one class; the model is multi-label)")
    if target is None:
        return []
    attack = AdversarialPatch(PatchAttackConfig(area=pc.area, steps=pc.steps))
    craft = st.dataset.split("train")
    craft_x, craft_y = craft.get(craft.sample_index(pc.n_craft, st.cfg.seed))
    craft_x, craft_y = craft_x.to(x.device), craft_y.to(x.device)
    keep = craft_y != target
    units = [Unit("patch/craft", "patch crafting",
                    patch_craft_unit(attack, st.model, craft_x[keep], craft_y[keep], target),
                    Passes(gradients=pc.steps * min(attack.config.batch_size, int(keep.sum()))))]
    others = (y != target).nonzero().flatten()
    budget = f"{pc.area:g} area"
    for k, s in enumerate(range(0, others.numel(), b)):
        sel = others[s:s + b]
        units.append(Unit(f"patch/apply/{k}", "patch", patch_apply_unit(
            attack, patch_bytes, st.subject, craft_x, craft_y, st.images.take(sel), target, budget,
            "grid-patch" if k == 0 else None), Passes(forwards=2 * sel.numel()),
            after="patch/craft", needs="patch-npz"))
    return units


def _onepixel_units(st: _Stages) -> list[Unit]:
    op, b, units = st.cfg.onepixel, st.cfg.batch_size, []
    if not (op.enabled and st.supported("onepixel")):
        return []
    # a seeded random subset of the audited images (splits are often stored sorted by class)
    n = len(st.images.ids)
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(st.cfg.seed))[: op.n].sort().values
    for px in op.pixels:
        # uniform start: the stage is black-box (output probabilities), as its threat model says
        attack = get_attack("onepixel", pixels=px, population=op.population, generations=op.generations,
                            init="uniform")
        for k, s in enumerate(range(0, sub.numel(), b)):
            sel = sub[s:s + b].to(st.images.x.device)
            units.append(Unit(f"onepixel/{px}/{k}", f"{px}-pixel", attack_unit(
                "onepixel", attack, f"{px} px", st.subject, st.images.take(sel),
                f"grid-onepixel-{px}" if k == 0 and px == op.pixels[-1] else None,
                unit_seed(st.cfg.seed, f"onepixel/{px}")), attack_cost(attack, st.model, sel.numel())))
    return units


def _map_units(st: _Stages) -> list[Unit]:
    mp, x, y = st.cfg.maps, st.images.x, st.images.y
    if not mp.enabled:
        return []
    single = st.model.task != MULTI_LABEL
    with torch.no_grad():
        pred = st.model.predict(x)
    correct = (pred == y).all(1) if not single else pred == y
    stride = mp.stride or map_stride(x.shape[2], x.shape[3])
    map_cost = Passes(forwards=map_queries(x.shape[1], x.shape[2], x.shape[3], mp.samples, stride))
    return [Unit(f"maps/{st.images.ids[j]}", "vulnerability maps",
                   map_unit(st.subject, st.images.take(slice(j, j + 1)), mp.samples, st.cfg.seed, stride), map_cost)
            for j in map_images(correct, y if single else None, st.model.meta.critical_classes, mp.n)]


def _backdoor_units(st: _Stages, out: Path | None) -> list[Unit]:
    bd = st.cfg.backdoor
    if bd.enabled and st.model.meta.arch is None:
        st.skipped.append("backdoor (retraining needs a model built from medfool's architecture registry)")
        return []
    if not bd.enabled or out is None:
        return []
    n_train = len(st.dataset.split("train"))
    models = 2 + len(backdoor_retrains(bd))  # clean, poisoned, one per retraining
    return [Unit("backdoor", "backdoor retraining", backdoor_unit(st.model, st.dataset, st.cfg, out / "backdoor"),
                   Passes(gradients=models * (bd.epochs or auto_epochs(n_train)) * n_train), local=True)]


def stage_rows(units: list[Unit]) -> list[tuple[str, int, Passes | None]]:
    """(stage, units, summed passes; None when any unit's cost is unknown), in running order."""
    rows: dict[str, tuple[int, Passes | None]] = {}
    for u in units:
        count, total = rows.get(u.stage, (0, Passes()))
        rows[u.stage] = (count + 1, None if total is None or u.cost is None else total + u.cost)
    return [(stage, count, total) for stage, (count, total) in rows.items()]


def estimate_audit(model: Classifier, dataset: Dataset, cfg: AuditConfig, say: Say = to_log) -> float:
    """Say what the audit would cost, stage by stage, on this machine, writing nothing; returns
    the estimated seconds (the stages that cannot be estimated left out)."""
    target = patch_target(dataset.info, cfg, model)
    ids, x, y = audit_images(dataset, cfg)
    x, y = x.to(model.device), y.to(model.device)

    def no_patch() -> bytes:
        raise AssertionError("an estimate runs no unit")

    units, skipped = plan(model, dataset, cfg, ids, x, y, no_patch, target, Path("."))  # nothing is written
    speed = measure_speed(model, x)
    stages = stage_rows(units)
    for line in plan_lines(stages, speed):
        say(line)
    for reason in skipped:
        say(f"  left out: {reason}")
    return sum(speed.seconds(p) for _, _, p in stages if p is not None)


def defence_units(model: Classifier, dataset: Dataset, cfg: AuditConfig, images: Chunk) -> list[Unit]:
    dc = cfg.defence
    units = []
    split = dataset.split(cfg.split)
    for k, d in enumerate(defences_named(model, dataset, dc.names)):
        slug = f"{k}-{fingerprint({'name': d.name, 'identity': d.digest})[:8]}"
        units.append(Unit(f"defence/{slug}", "defences", defence_unit(
            slug, d, model, split, images, dc.eps, dc.preset, dc.eot, unit_seed(cfg.seed, f"defence/{d.name}")),
            defence_passes(d.model, dc, len(split), len(images.ids))))
    return units


def defence_passes(defended: Classifier, dc: DefenceSection, split: int, n: int) -> Passes | None:
    """One defence: the ensemble's members as the naive attacker and the masking check (one
    ensemble's worth), again through the adaptive view (each pass ``eot`` draws on a random
    defence), both models on the split, and the inference timing."""
    adaptive = defended.adapts
    draws = dc.eot if defended.randomised else 1
    total = Passes(forwards=2 * split + 6 * n)
    for e in dc.eps:
        ens = attack_passes("ensemble", {"eps": e / 255, "preset": dc.preset}, defended, n)
        if ens is None:
            return None
        total = total + ens * (1 + (draws if adaptive else 0))
    return total


def map_images(correct: torch.Tensor, y: torch.Tensor | None, critical: tuple[int, ...], n: int) -> list[int]:
    """Up to n correctly classified images for the maps, one per class first (critical classes
    first), so the maps show different tissue rather than n tiles of one class."""
    ok = correct.nonzero().flatten().tolist()
    if y is None:
        return ok[:n]
    order = list(critical) + sorted(set(y.tolist()) - set(critical))
    first = [next(j for j in ok if int(y[j]) == c) for c in order if any(int(y[j]) == c for j in ok)]
    rest = [j for j in ok if j not in first]
    return (first + rest)[:n]


def model_digest(model: Classifier) -> str:
    """SHA-256 of the weights and metadata (not of the file: a re-saved checkpoint is the same model)."""
    digest = hashlib.sha256(json.dumps(model.meta.to_json(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def settings_fingerprint(cfg: AuditConfig, model: Classifier, dataset: Dataset, ids: list[int]) -> str:
    src = Path(dataset.info.source)
    return fingerprint({"config": cfg.to_json(), "model": model_digest(model),
                        "dataset": dataset.info.name, "data": file_digest(src) if src.is_file() else str(src),
                        "images": ids, "medfool": __version__})


def open_store(out: Path, fp: str, meta: dict[str, Any], fresh: bool) -> tuple[ResultStore, bool]:
    """The store in ``out``: new, resumed (same settings) or refused (other settings). The
    caller holds the folder's lock."""
    path = out / STORE
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    store = ResultStore.open(path)
    try:
        resumed = store.claim(fp, meta)
    except BaseException:
        store.close()
        raise
    return store, resumed


def run_audit(model: Classifier, model_path: str, dataset: Dataset, cfg: AuditConfig, out: Path, *,
              fresh: bool = False, command: dict[str, Any] | None = None, executor: Executor | None = None,
              say: Say = to_log) -> Path:
    """Run (or resume) the audit into ``out`` (its units in this process, or where ``executor``
    sends them); returns the report's path."""
    target = patch_target(dataset.info, cfg, model)  # an unknown class name fails before anything is written
    ids, x, y = audit_images(dataset, cfg)
    x, y = x.to(model.device), y.to(model.device)
    check_outputs(model, x, model_path)  # before the store exists: a refused model leaves nothing behind
    fp = settings_fingerprint(cfg, model, dataset, ids)
    info = dataset.info
    meta = {
        "config": cfg.to_json(), "seed": cfg.seed, "environment": environment(), "model": model_path,
        "dataset": info.name, "dataset_source": info.source, "classes": list(info.class_names),
        "critical": list(model.meta.critical_classes), "task": model.task, "images": ids,
        "image_shape": list(x.shape[1:]), "command": command or {}, "started": time.time(),
        "defended": model.adapts,
        **({} if info.window is None else {"native": {"unit": info.window.unit, "window_centre": info.window.centre,
                                                       "window_width": info.window.width}}),
        **({} if target is None else {"patch_target": target, "patch_target_name": info.class_names[target]}),
    }
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(out):
            return _run(model, dataset, cfg, out, ids, x, y, target, fp, meta, fresh, executor or InProcess(), say)
    except MedfoolError:
        if created and not _has_results(out):  # a refusal in the first unit leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _has_results(out: Path) -> bool:
    """Whether the folder's store holds any finished unit."""
    try:
        with ResultStore.open(out / STORE, readonly=True) as store:
            return bool(store.done_units())
    except ConfigError:
        return False


def _run(model: Classifier, dataset: Dataset, cfg: AuditConfig, out: Path, ids: list[int], x: torch.Tensor,
         y: torch.Tensor, target: int | None, fp: str, meta: dict[str, Any], fresh: bool, executor: Executor,
         say: Say) -> Path:
    store, resumed = open_store(out, fp, meta, fresh)
    with store:
        def artifact(name: str) -> bytes:
            found = store.artifact(name)
            assert found is not None, f"{name} read before the unit that writes it ran"
            return found[1]

        def patch_bytes() -> bytes:
            return artifact("patch-npz")

        units, skipped = plan(model, dataset, cfg, ids, x, y, patch_bytes, target, out)
        store.set_meta("skipped", skipped)
        if store.prune({u.name for u in units}):
            log.info("dropped results of units this version no longer plans")
        done = store.done_units()
        todo = [u for u in units if u.name not in done]
        if resumed:
            say(f"resuming: {len(units) - len(todo)} of {len(units)} units already in {store.path}")
        # the bar advances by each unit's estimated time, so its ETA weighs a map against an FGSM chunk
        weight = {u.name: 1.0 for u in units}
        if todo:  # a rerun with every unit done times nothing
            speed = measure_speed(model, x)
            for line in plan_lines(stage_rows(todo), speed):
                say(line)
            if not isinstance(executor, InProcess):
                say(f"  running {len(todo)} units on {executor.where}")
            weight = dict(zip(weight, weights([u.cost for u in units], speed), strict=True))
        bar = progress(total=sum(weight.values()), initial=sum(weight[u] for u in done if u in weight), desc="audit",
                       leave=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        stages: set[str] = set()

        def started(unit: Unit) -> None:
            if unit.stage not in stages:
                stages.add(unit.stage)
                say(f"  {unit.stage} ...")
                bar.set_description(unit.stage)

        def commit(result: Done) -> None:
            store.commit_unit(result.name, result.rows, result.artifacts, result.wall_s,
                              cell=(result.worker, result.retries, executor.where))
            bar.update(weight[result.name])

        try:
            executor.run(todo, cfg.seed, started, commit, artifact)
        finally:
            bar.close()
        report = render(store, out)
    remove_stray_parts(out)  # left by a run killed while writing (this run holds the folder's lock)
    return report
