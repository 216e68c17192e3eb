"""Training-process tampering, measured end to end.

One experiment folder holds every model it trains (``NAME/model.safetensors``); each finished
model is also a unit of the folder's ledger (OUT/run.sqlite, keyed by the fingerprint of its
training set and settings), so an interrupted run started again with the same command reuses
what is finished and trains only what is missing. Results go to
``results.json`` after every stage. Every model is trained by the one training loop
(:func:`medfool.models.train.fit`), with the same seed as the clean reference, so the only
difference between two models is the training set.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool import __version__
from medfool.attacks.poisoning.availability import AvailabilityConfig, poison_availability
from medfool.attacks.poisoning.backdoor import (
    BackdoorConfig,
    PoisonedSet,
    attack_success,
    check_feasible,
    is_target,
    poison,
    target_labels,
)
from medfool.attacks.poisoning.triggers import Trigger, describe, make_trigger
from medfool.data.dataset import Dataset, DatasetInfo, Split, benign_class
from medfool.defences.backdoor import SampleFlags, activation_clustering, detection_rates, spectral_signatures
from medfool.defences.backdoor.cleanse import neural_cleanse
from medfool.defences.backdoor.features import representation
from medfool.defences.backdoor.strip import Strip, fit_strip, strip_training_flags
from medfool.errors import ConfigError
from medfool.models.checkpoint import load_classifier, save_checkpoint
from medfool.models.classifier import Classifier
from medfool.models.metrics import evaluate
from medfool.models.train import TrainConfig, fit
from medfool.report.grid import class_grid
from medfool.report.plots import line_chart
from medfool.runs.common import DataSource, check_writable, log_epoch
from medfool.runs.ledger import Ledger
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_open, atomic_write_bytes, atomic_write_json, json_safe
from medfool.utils.repro import environment, fingerprint
from medfool.vocab import MULTI_LABEL, Device

__all__ = [
    "DEFAULT_SWEEP",
    "DETECTORS",
    "SAMPLE_DETECTORS",
    "AvailabilityJob",
    "BackdoorJob",
    "BackdoorPlan",
    "ModelCache",
    "Results",
    "TriggerSpec",
    "availability_experiment",
    "backdoor_experiment",
    "backdoor_target",
    "check_backdoor",
    "detect",
    "retrainable",
    "run_availability",
    "run_availability_job",
    "run_backdoor",
    "run_backdoor_job",
    "save_poisoned_set",
    "split_digest",
    "sweep",
    "trigger_figure",
    "unlearning_set",
]

log = logging.getLogger(__name__)

DETECTORS = ("activation-clustering", "spectral-signatures", "strip", "neural-cleanse")
# training-set flags; nc-guided-clustering exists when both activation clustering and Neural Cleanse ran
SAMPLE_DETECTORS = ("activation-clustering", "spectral-signatures", "strip", "nc-guided-clustering")
DEFAULT_SWEEP = (0.005, 0.01, 0.02, 0.05, 0.1)


def retrainable(detectors: Sequence[str]) -> tuple[str, ...]:
    """What a run with these detectors can retrain after: each training-set detector that ran,
    the NC-guided clustering when both of its parts ran, and Neural Cleanse's unlearning."""
    ran = set(detectors)
    both = {"activation-clustering", "neural-cleanse"} <= ran
    return tuple(d for d in (*SAMPLE_DETECTORS, "neural-cleanse")
                 if d in ran or (d == "nc-guided-clustering" and both))


def split_digest(split: Split, batch: int = 4096) -> str:
    """SHA-256 over a split's stored pixels and labels: what a cached model was trained on."""
    h = hashlib.sha256(split.labels.numpy().tobytes())
    for start in range(0, len(split), batch):
        h.update(np.ascontiguousarray(split.raw(np.arange(start, min(len(split), start + batch)))).tobytes())
    return h.hexdigest()[:16]


def backdoor_target(info: DatasetInfo, text: str | None, critical: Sequence[int] | None = None) -> int | None:
    """The class a backdoor's trigger sends images to. ``auto`` (or None): the benign / normal
    class (a cancer read as benign is the dangerous flip; ``critical`` the classes that are not
    benign, default the dataset's), or for multi-label data "no finding" (None: every label
    negative); else a class name."""
    if text in (None, "auto"):
        if info.task == MULTI_LABEL:
            return None
        return benign_class(info.class_names, info.critical_classes if critical is None else critical)
    if text in ("none", "no-finding") and info.task == MULTI_LABEL:
        return None
    return info.class_index(str(text))


class ModelCache:
    """Trains models into ``root/NAME/``, or reuses one finished with the same settings (a unit of
    the folder's :class:`~medfool.runs.ledger.Ledger`)."""

    def __init__(self, root: Path, dataset: Dataset, cfg: TrainConfig, device: torch.device | str,
                 on_epoch: Callable[[dict[str, float]], None] | None = None) -> None:
        self.root, self.dataset, self.cfg, self.device, self.on_epoch = root, dataset, cfg, device, on_epoch

    def get(self, name: str, train: Split | None = None) -> tuple[Classifier, dict[str, Any]]:
        train = train if train is not None else self.dataset.split("train")
        key = fingerprint({"train": split_digest(train), "dataset": self.dataset.info.name,
                           "cfg": asdict(self.cfg), "version": __version__})
        path = self.root / name / "model.safetensors"
        trained: list[tuple[Classifier, dict[str, Any]]] = []

        def train_into(where: Path) -> None:
            log.info("%s: training on %d images", name, len(train))
            result = fit(self.dataset, self.cfg, device=self.device, train_split=train, on_epoch=self.on_epoch)
            record = {**result.record, "fingerprint": key, "name": name}
            save_checkpoint(result.model, where, record)
            trained.append((result.model, record))

        with Ledger.open(self.root) as ledger:
            if not ledger.file_unit(f"model/{name}", key, path, train_into, "safetensors"):
                return trained[0]
        log.info("%s: reusing %s", name, path)
        return load_classifier(path, device=self.device)


def _score(model: Classifier, dataset: Dataset, trigger: Trigger | None = None,
           cfg: BackdoorConfig | None = None) -> dict[str, Any]:
    test = dataset.split("test")
    out: dict[str, Any] = {"test": evaluate(model, test)}
    if trigger is not None and cfg is not None:
        out["backdoor"] = attack_success(model, test, trigger, cfg)
    return out


@dataclass(frozen=True)
class BackdoorPlan:
    """What a backdoor experiment runs besides the clean and poisoned models."""

    detectors: tuple[str, ...] = DETECTORS
    retrain: tuple[str, ...] = SAMPLE_DETECTORS
    sweep: tuple[float, ...] = ()
    cleanse_steps: int = 300
    strip_frr: float = 0.05
    spectral_eps: float = 0.1

    def __post_init__(self) -> None:
        for name in self.detectors:
            if name not in DETECTORS:
                raise ConfigError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")
        for name in self.retrain:
            if name not in (*SAMPLE_DETECTORS, "neural-cleanse"):
                raise ConfigError(f"cannot retrain after {name!r} (use one of {', '.join(DETECTORS)})")
        for rate in self.sweep:
            if not 0 < rate < 1:
                raise ConfigError(f"sweep rates must be fractions in (0, 1), got {rate}")


class Results:
    """results.json, rewritten after every stage so an interruption loses at most one stage."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.data = path, dict(header)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = json_safe(value)
        atomic_write_json(self.path, self.data)


def check_backdoor(dataset: Dataset, trigger: Trigger, bd: BackdoorConfig, plan: BackdoorPlan) -> None:
    """Every error the poisoning can raise, at every rate of the plan, before any work."""
    info, train = dataset.info, dataset.split("train")
    for rate in {bd.rate, *plan.sweep}:
        check_feasible(train, trigger, replace(bd, rate=rate), num_classes=info.num_classes, task=info.task)


def run_backdoor(dataset: Dataset, trigger: Trigger, bd: BackdoorConfig, train_cfg: TrainConfig, plan: BackdoorPlan,
                 out: Path, *, device: torch.device | str = "cpu", seed: int = 0, command: dict[str, Any] | None = None,
                 on_epoch: Callable[[dict[str, float]], None] | None = None,
                 say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Clean model, poisoned model, detectors, retraining without what they found, and an
    optional poison-rate sweep; returns (and writes) ``out/results.json``."""
    info = dataset.info
    train = dataset.split("train")
    check_backdoor(dataset, trigger, bd, plan)
    cache = ModelCache(out, dataset, train_cfg, device, on_epoch)
    res = Results(out / "results.json", {
        "kind": "backdoor", "dataset": info.name, "dataset_source": info.source, "seed": seed,
        "trigger": {"description": describe(trigger), **trigger.description},
        "backdoor": bd.to_json(), "target_name": None if bd.target is None else info.class_names[bd.target],
        "class_names": list(info.class_names),
        "plan": asdict(plan), "train_config": asdict(train_cfg), "command": command or {},
        "environment": environment()})
    clean_model, _ = cache.get("clean", train)
    clean = _score(clean_model, dataset, trigger, bd)
    res.put("clean_model", clean)
    say(f"clean model: accuracy {clean['test']['accuracy']:.4f}, ASR {clean['backdoor']['asr']:.4f}")
    poisoned = poison(train, trigger, bd, num_classes=info.num_classes, task=info.task, seed=seed,
                      surrogate=clean_model)
    save_poisoned_set(poisoned, out / "poisoned_train.npz")
    res.put("poison", poisoned.summary())
    model, _ = cache.get("poisoned", poisoned.split)
    scored = _score(model, dataset, trigger, bd)
    scored["accuracy_drop"] = clean["test"]["accuracy"] - scored["test"]["accuracy"]
    res.put("poisoned_model", scored)
    say(f"poisoned model ({poisoned.index.size} of {len(train)} training images): accuracy "
        f"{scored['test']['accuracy']:.4f} (drop {100 * scored['accuracy_drop']:.1f} pts), "
        f"ASR {scored['backdoor']['asr']:.4f}")
    flags = detect(model, dataset, poisoned, plan, seed=seed, res=res, say=say, out=out)
    retrained: dict[str, Any] = {}
    for name in plan.retrain:
        entry: dict[str, Any]
        if name == "neural-cleanse":
            split = flags.get("neural-cleanse-unlearn")
            if not isinstance(split, Split):
                continue
            m, _ = cache.get("retrain-neural-cleanse", split)
            entry = {"method": "unlearning: 20 % of training images stamped with the reversed trigger, labels kept"}
        else:
            found = flags.get(name)
            if not isinstance(found, SampleFlags):
                continue
            m, _ = cache.get(f"retrain-{name}", poisoned.without(found.index))
            entry = {"removed": int(found.flagged.sum()), "poisons_left": int((~found.flagged & poisoned.mask).sum())}
        entry |= _score(m, dataset, trigger, bd)
        retrained[name] = entry
        res.put("retrained", retrained)
        say(f"retrained after {name}: accuracy {entry['test']['accuracy']:.4f}, ASR {entry['backdoor']['asr']:.4f}")
    if plan.sweep:
        res.put("sweep", sweep(cache, dataset, trigger, bd, plan.sweep, seed=seed, clean_model=clean_model,
                               say=say, known={bd.rate: (poisoned, scored)}))
    return res.data


def backdoor_experiment(dataset: Dataset, trigger: Trigger, bd: BackdoorConfig, train_cfg: TrainConfig,
                        plan: BackdoorPlan, out: Path, *, device: torch.device, seed: int, command: dict[str, Any],
                        say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """``medfool poison backdoor``: :func:`run_backdoor` with its figures (trigger.png, and
    sweep.png when the poison rate is swept)."""
    info = dataset.info
    check_backdoor(dataset, trigger, bd, plan)  # before anything is written
    where = "all-to-all" if bd.mode == "all-to-all" else \
        f"-> {info.class_names[bd.target] if bd.target is not None else 'no finding'}"
    say(f"backdoor on {dataset.summary()}: {trigger.description['kind']} trigger, {where}, rate {bd.rate:g}"
        f"{', clean-label' if bd.clean_label else ''}")
    atomic_write_bytes(out / "trigger.npz", trigger.to_bytes())
    trigger_figure(out / "trigger.png", dataset, trigger)
    result = run_backdoor(dataset, trigger, bd, train_cfg, plan, out, device=device, seed=seed, command=command,
                          on_epoch=log_epoch, say=say)
    if result.get("sweep"):
        rows = result["sweep"]
        line_chart(out / "sweep.png", [r["rate"] for r in rows],
                   {"attack success rate": [r["asr"] for r in rows], "clean accuracy": [r["accuracy"] for r in rows]},
                   xlabel="poisoned training images (%)", ylabel="rate", percent_x=True,
                   title=f"{info.name}: {trigger.description['kind']} backdoor vs poison rate")
    say(f"results in {out}/ (results.json, poisoned_train.npz, trigger.png, models)")
    return result


def availability_experiment(dataset: Dataset, cfg: AvailabilityConfig, rates: Sequence[float],
                            train_cfg: TrainConfig, out: Path, *, device: torch.device, seed: int,
                            command: dict[str, Any], say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """``medfool poison availability``: :func:`run_availability` and its accuracy.png."""
    for rate in rates:
        if not 0 < rate <= 1:
            raise ConfigError(f"poison rates must be in (0, 1], got {rate}")
    say(f"availability poisoning ({cfg.method}) on {dataset.summary()}")
    result = run_availability(dataset, cfg, rates, train_cfg, out, device=device, seed=seed, command=command,
                              on_epoch=log_epoch, say=say)
    rows = result["curve"]
    line_chart(out / "accuracy.png", [r["rate"] for r in rows], {"clean test accuracy": [r["accuracy"] for r in rows]},
               xlabel="poisoned training images (%)", ylabel="accuracy", percent_x=True,
               title=f"{dataset.info.name}: {cfg.method} poisoning")
    say(f"results in {out}/ (results.json, accuracy.png, models)")
    return result


def detect(model: Classifier, dataset: Dataset, poisoned: PoisonedSet, plan: BackdoorPlan, *, seed: int,
           res: Results, say: Callable[[str], None], out: Path | None = None) -> dict[str, Any]:
    """Run the chosen detectors on the poisoned model and training set; score them against the
    ground truth. Returns each sample detector's flags (and Neural Cleanse's unlearning set)."""
    found: dict[str, Any] = {}
    report: dict[str, Any] = {}
    truth = poisoned.mask
    wants = set(plan.detectors)
    infected = _cleanse(model, dataset, poisoned, plan, seed, report, found, say, out) if "neural-cleanse" in wants \
        else []
    if wants & {"activation-clustering", "spectral-signatures"}:
        z = representation(model, poisoned.split)
        if "activation-clustering" in wants:
            found["activation-clustering"] = activation_clustering(model, poisoned.split, seed=seed, features=z)
            if infected:
                found["nc-guided-clustering"] = activation_clustering(model, poisoned.split, seed=seed, features=z,
                                                                      infected=infected)
        if "spectral-signatures" in wants:
            found["spectral-signatures"] = spectral_signatures(model, poisoned.split, eps=plan.spectral_eps,
                                                               features=z)
    if "strip" in wants:
        screen = fit_strip(model, dataset.split("val"), frr=plan.strip_frr, seed=seed)
        found["strip"] = strip_training_flags(model, poisoned.split, screen, seed=seed)
        report["strip-inference"] = _strip_inference(model, dataset, poisoned, screen, seed)
    for name, flags in found.items():
        if isinstance(flags, SampleFlags):
            report[name] = {**detection_rates(flags, truth), "details": flags.details}
            say(f"{name}: flags {report[name]['tpr']:.1%} of the poisons at {report[name]['fpr']:.1%} false positives")
    res.put("detection", report)
    return found


def _cleanse(model: Classifier, dataset: Dataset, poisoned: PoisonedSet, plan: BackdoorPlan, seed: int,
             report: dict[str, Any], found: dict[str, Any], say: Callable[[str], None], out: Path | None) -> list[int]:
    """Neural Cleanse: the labels it finds infected (and its report, figure and unlearning set)."""
    if model.task == MULTI_LABEL:
        return []
    nc = neural_cleanse(model, dataset.split("val"), steps=plan.cleanse_steps, seed=seed)
    target = poisoned.config.target if poisoned.config.mode == "all-to-one" else None
    ranked = sorted(range(len(nc.norms)), key=lambda k: nc.norms[k])
    report["neural-cleanse"] = {"norms": nc.norms, "anomaly_index": nc.anomaly,
                                "infected": nc.infected, "success": nc.success, "smallest": ranked[0],
                                "true_target": target, **nc.details}
    say(f"neural-cleanse: smallest reversed trigger for class {ranked[0]} (L1 {nc.norms[ranked[0]]:.1f}), "
        f"infected: {nc.infected or 'none'}")
    found["neural-cleanse-triggers"] = nc.triggers
    if out is not None:
        _reversed_figure(out / "reversed_triggers.png", nc.triggers, dataset.info.class_names, nc.norms)
    suspect = nc.infected[0] if nc.infected else None
    if suspect is not None:
        found["neural-cleanse-unlearn"] = unlearning_set(poisoned.split, nc.triggers[suspect], seed=seed)
    return list(nc.infected)


def trigger_figure(path: Path, dataset: Dataset, trigger: Trigger, seed: int = 0) -> Path:
    """Four training images, clean and with the trigger, side by side."""
    train = dataset.split("train")
    x, y = train.get(train.sample_index(4, seed))
    names = dataset.info.class_names
    captions = [(names[int(v)][:28] if y.ndim == 1 else "", "with trigger") for v in y]
    return class_grid(path, [x, trigger.apply(x)], captions, "training images: clean | with the trigger")


def _reversed_figure(path: Path, triggers: Sequence[Trigger], names: Sequence[str], norms: Sequence[float]) -> None:
    """One row per class: the reversed mask and the stamp it carries (mask x pattern)."""
    masks = torch.stack([t.mask.expand_as(t.pattern) for t in triggers])
    stamps = torch.stack([t.mask * t.pattern for t in triggers])
    captions = [(f"{n[:18]} L1 {v:.1f}", "mask x pattern") for n, v in zip(names, norms, strict=True)]
    class_grid(path, [masks, stamps], captions, "Neural Cleanse: smallest trigger per class")


def _strip_inference(model: Classifier, dataset: Dataset, poisoned: PoisonedSet, screen: Strip,
                     seed: int) -> dict[str, Any]:
    """STRIP as a run-time screen: triggered test inputs caught vs clean test inputs rejected."""
    test = dataset.split("test")
    x, y = test.get(test.sample_index(2000, seed))  # a seeded sample: 16 blends per image add up on PCam
    t = target_labels(y, poisoned.config, dataset.info.num_classes, dataset.info.task)
    gen = torch.Generator().manual_seed(seed)
    clean_flag = screen.flags(model, x, gen)
    trig_flag = screen.flags(model, poisoned.trigger.apply(x[~is_target(y, t)]), gen)
    return {"tpr": float(trig_flag.float().mean()), "fpr": float(clean_flag.float().mean()),
            "threshold": screen.threshold, "frr_target": screen.frr, "n_triggered": int(trig_flag.numel()),
            "n_clean": int(clean_flag.numel())}


def unlearning_set(train: Split, trigger: Trigger, *, share: float = 0.2, seed: int = 0) -> Split:
    """Neural Cleanse's patching by unlearning: stamp the reversed trigger on a seeded ``share``
    of the training images and keep their labels, so retraining learns the trigger means nothing."""
    gen = torch.Generator().manual_seed(seed + 1)
    pick = np.sort(torch.randperm(len(train), generator=gen)[: int(share * len(train))].numpy())
    x, _ = train.get(pick)
    return train.replace(pick, trigger.apply(x), train.labels.numpy())


def sweep(cache: ModelCache, dataset: Dataset, trigger: Trigger, bd: BackdoorConfig, rates: Sequence[float], *,
          seed: int, clean_model: Classifier, say: Callable[[str], None],
          known: dict[float, tuple[PoisonedSet, dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Clean accuracy and ASR of a model poisoned at each rate (same seed, same trigger)."""
    rows = []
    train = dataset.split("train")
    for rate in sorted(rates):
        if known and rate in known:
            ps, scored = known[rate]
        else:
            ps = poison(train, trigger, replace(bd, rate=rate), num_classes=dataset.info.num_classes,
                        task=dataset.info.task, seed=seed, surrogate=clean_model)
            model, _ = cache.get(f"sweep-{rate:g}", ps.split)
            scored = _score(model, dataset, trigger, replace(bd, rate=rate))
        rows.append({"rate": rate, "n_poisoned": int(ps.index.size), "accuracy": scored["test"]["accuracy"],
                     "auc": scored["test"]["auc"], "asr": scored["backdoor"]["asr"]})
        say(f"sweep {rate:.1%}: {ps.index.size} poisons, accuracy {rows[-1]['accuracy']:.4f}, "
            f"ASR {rows[-1]['asr']:.4f}")
    return rows


def save_poisoned_set(poisoned: PoisonedSet, path: Path) -> None:
    """The poisoned training set as an image file would carry it, plus the ground truth."""
    split = poisoned.split
    with atomic_open(path) as handle:
        np.savez_compressed(handle, train_images=split.raw(np.arange(len(split))),
                            train_labels=split.labels.numpy(), poisoned=poisoned.mask,
                            original_labels=poisoned.original_labels.numpy())


def run_availability(dataset: Dataset, cfg: AvailabilityConfig, rates: Sequence[float], train_cfg: TrainConfig,
                     out: Path, *, device: torch.device | str = "cpu", seed: int = 0,
                     command: dict[str, Any] | None = None,
                     on_epoch: Callable[[dict[str, float]], None] | None = None,
                     say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Accuracy drop per poison rate for an availability attack (the clean model at rate 0)."""
    cache = ModelCache(out, dataset, train_cfg, device, on_epoch)
    res = Results(out / "results.json", {
        "kind": "availability", "dataset": dataset.info.name, "dataset_source": dataset.info.source, "seed": seed,
        "availability": asdict(cfg), "rates": list(rates), "train_config": asdict(train_cfg),
        "command": command or {}, "environment": environment()})
    train = dataset.split("train")
    clean_model, _ = cache.get("clean", train)
    base = evaluate(clean_model, dataset.split("test"))
    rows: list[dict[str, Any]] = [{"rate": 0.0, "n_poisoned": 0, "accuracy": base["accuracy"], "auc": base["auc"],
                                   "accuracy_drop": 0.0}]
    res.put("curve", rows)
    say(f"clean model: accuracy {base['accuracy']:.4f}")
    for rate in sorted(rates):
        split, index = poison_availability(train, replace(cfg, rate=rate), num_classes=dataset.info.num_classes,
                                           task=dataset.info.task, seed=seed, surrogate=clean_model)
        model, _ = cache.get(f"{cfg.method}-{rate:g}", split)
        m = evaluate(model, dataset.split("test"))
        rows.append({"rate": rate, "n_poisoned": int(index.size), "accuracy": m["accuracy"], "auc": m["auc"],
                     "accuracy_drop": base["accuracy"] - m["accuracy"]})
        res.put("curve", rows)
        say(f"{cfg.method} {rate:.0%}: {index.size} poisons, accuracy {m['accuracy']:.4f} "
            f"(drop {100 * rows[-1]['accuracy_drop']:.1f} pts)")
    return res.data


# -- the jobs of `medfool poison`: the data is read here, not on the command line ----------------
@dataclass(frozen=True)
class TriggerSpec:
    """A trigger before the image size is known: :func:`make_trigger`'s options."""

    kind: str = "patch"
    size: int | None = None
    shape: str = "checker"
    colour: str | None = None
    position: str | tuple[int, int] = "bottom-right"
    alpha: float = 0.1


@dataclass(frozen=True)
class BackdoorJob:
    """``medfool poison backdoor``. ``target``: a class name, 'auto' or 'none' (multi-label: no
    finding); ignored for all-to-all poisoning. ``backdoor.target`` is filled in from it."""

    data: DataSource
    out: Path
    trigger: TriggerSpec
    backdoor: BackdoorConfig
    target: str | None
    plan: BackdoorPlan
    train: TrainConfig
    device: Device = "auto"
    seed: int = 0
    command: dict[str, Any] = field(default_factory=dict)


def run_backdoor_job(job: BackdoorJob, say: Callable[[str], None] = log.info) -> dict[str, Any]:
    check_writable(job.out)
    dataset = job.data.load()
    t = job.trigger
    trigger = make_trigger(t.kind, dataset.split("train").image_shape, size=t.size, shape=t.shape, colour=t.colour,
                           position=t.position, alpha=t.alpha, seed=job.seed)
    target = None if job.backdoor.mode == "all-to-all" else backdoor_target(dataset.info, job.target)
    return backdoor_experiment(dataset, trigger, replace(job.backdoor, target=target), job.train, job.plan, job.out,
                               device=resolve_device(job.device), seed=job.seed, command=job.command, say=say)


@dataclass(frozen=True)
class AvailabilityJob:
    """``medfool poison availability``: the poisoning method and the rates to measure."""

    data: DataSource
    out: Path
    poison: AvailabilityConfig
    rates: tuple[float, ...]
    train: TrainConfig
    device: Device = "auto"
    seed: int = 0
    command: dict[str, Any] = field(default_factory=dict)


def run_availability_job(job: AvailabilityJob, say: Callable[[str], None] = log.info) -> dict[str, Any]:
    check_writable(job.out)
    dataset = job.data.load()
    return availability_experiment(dataset, job.poison, job.rates, job.train, job.out,
                                   device=resolve_device(job.device), seed=job.seed, command=job.command, say=say)
