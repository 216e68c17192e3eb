"""Defence runs: measure defended models (naive vs adaptive attacker), detectors and smoothed
certificates on a dataset's test images, writing OUT/defence.json, OUT/detectors.json or
OUT/certify.json as each unit finishes.

Every unit (one defended model, one detector, one certificate) is recorded in OUT/run.sqlite
under the fingerprint of its model files and settings, so an interrupted run resumes where it
stopped and a rerun with the same settings costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

from medfool.attacks.ensemble import members
from medfool.data.dataset import Dataset, Split
from medfool.defences.detector_attack import evaluate_detector
from medfool.defences.detectors import DETECTORS, fit_detector
from medfool.defences.evaluation import DefenceReport, Held, inference_ms, worst_case
from medfool.defences.input_transforms import with_transforms
from medfool.defences.robust_training import RobustObjective
from medfool.defences.smoothing import certified_accuracy, certify, trained_sigma
from medfool.errors import ConfigError, DataError
from medfool.models import architectures, ensemble_classifier, load_classifier, save_checkpoint
from medfool.models.metrics import evaluate
from medfool.models.train import TrainConfig
from medfool.runs.chunks import (
    Chunk,
    ChunkRunner,
    InProcessChunks,
    VictimSpec,
    choose_runner,
    chunks_of,
    defence_chunk,
    ensemble_chunk,
    join_held,
)
from medfool.runs.common import DataSource, Say, check_writable, fmt, folder_lock, match_model_to_data, to_log
from medfool.runs.defended import Defended, load_defended, measure_defence, transformed
from medfool.runs.ledger import Ledger
from medfool.runs.train import train_job
from medfool.runs.train_ray import Spread
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json, json_safe
from medfool.utils.repro import environment, fingerprint
from medfool.utils.stats import accuracy_breakdown, positive_class
from medfool.vocab import Combine, Device, Preset

__all__ = ["AdvTrainJob", "DefenceRun", "DefendJob", "Defended", "Measure", "held_out", "run_adv_train", "run_certify",
           "run_defend", "run_detectors", "run_evaluate", "test_sample", "trained_accuracy", "write_ensemble",
           "write_transformed"]



DETECTION_FORMAT = 2  # raise when a detector unit's stored result would no longer match what is computed


@dataclass(frozen=True)
class DefenceRun:
    dataset: Dataset
    out: Path
    eps: tuple[float, ...] = (2 / 255, 8 / 255)
    n: int = 200
    preset: Preset = "standard"
    eot: int = 8
    seed: int = 0
    runner: ChunkRunner | None = None  # evaluate: where the chunks run (None: here, in one batch)
    chunk: int = 32                    # evaluate: images per chunk, the same in process and on workers


def held_out(dataset: Dataset) -> Split:
    """The held-out test split every defence is measured on. Without one, refused: the val split
    sets detectors' thresholds and selected the training epoch, so it would flatter the defence."""
    if "test" not in dataset.splits:
        raise DataError(f"{dataset.info.name} has no test split: defences are measured on held-out test images, "
                        "and the val split calibrates detectors and selects training epochs (add a test split)")
    return dataset.split("test")


def test_sample(dataset: Dataset, n: int, seed: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """``n`` test images drawn with ``seed`` (sorted dataset indices, pixels, labels)."""
    split = held_out(dataset)
    n = min(n, len(split))
    ids = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    x, y = split.get(ids)
    return ids, x, y


class _Results:
    """A run's JSON result file, rewritten after every unit."""

    def __init__(self, run: DefenceRun, name: str, settings: dict[str, Any]) -> None:
        self.path = run.out / name
        self.data: dict[str, Any] = {"dataset": run.dataset.info.name, "settings": settings,
                                     "environment": environment(), "defences": [], "certificates": []}

    def add(self, section: str, item: dict[str, Any]) -> None:
        self.data[section].append(item)
        atomic_write_json(self.path, json_safe(self.data))


def run_evaluate(run: DefenceRun, baseline: Defended | None, defended: Sequence[Defended], *,
                 say: Say = to_log) -> list[dict[str, Any]]:
    """Naive vs adaptive robust accuracy of each defended model at each budget, beside the
    undefended ``baseline`` under the full ensemble."""
    ids, x, y = test_sample(run.dataset, run.n, run.seed)
    test = held_out(run.dataset)
    settings = {"eps": list(run.eps), "n": len(ids), "preset": run.preset, "eot": run.eot, "seed": run.seed}
    results = _Results(run, "defence.json", settings)
    reports = []
    names = run.dataset.info.class_names
    positive = positive_class(run.dataset.info.critical_classes, len(names))

    def breakdown(held: torch.Tensor) -> dict[str, Any]:
        return accuracy_breakdown(held.tolist(), y.tolist() if y.dim() == 1 else None, names, positive=positive)

    with Ledger.open(run.out) as ledger:
        base_rows: dict[float, dict[str, Any]] = {}
        base_clean = base_infer = None
        if baseline is not None:
            def base() -> dict[str, Any]:
                say(f"undefended {baseline.name}: the full ensemble ({run.preset}) at "
                    f"{', '.join(f'{e * 255:g}/255' for e in run.eps)}")
                out = {"clean_accuracy": evaluate(baseline.model, test)["accuracy"], "robust": {}}
                if run.runner is not None:
                    run.runner.register("baseline", VictimSpec(obj=baseline.model))
                for eps in run.eps:
                    if run.runner is None:
                        ok, _ = worst_case(baseline.model, baseline.model, members(run.preset, baseline.model.task,
                                                                                    eps, "linf"), x, y, ids, run.seed)
                    else:
                        ok = torch.cat(run.runner.run(partial(ensemble_chunk, eps, run.preset), "baseline",
                                                      _chunks(run, x, y, ids), run.seed, f"undefended {eps * 255:g}"))
                    out["robust"][f"{eps:.6f}"] = breakdown(ok)
                out["infer_ms"] = inference_ms(baseline.model, x)
                return out

            b = ledger.json_unit("baseline", fingerprint({"m": baseline.digest, **settings}), base)
            base_clean = b["clean_accuracy"]
            base_rows = {float(k): v for k, v in b["robust"].items()}
            base_infer = b["infer_ms"]
        for d in defended:
            def measure(d: Defended = d) -> dict[str, Any]:
                say(f"{d.name}: naive, masking-check and adaptive attackers at "
                    f"{', '.join(f'{e * 255:g}/255' for e in run.eps)} on {len(ids)} test images")
                return measure_defence(d, test, x, y, ids, run.eps, names=names, positive=positive,
                                       preset=run.preset, seed=run.seed, eot=run.eot,
                                       baseline_clean=base_clean, baseline_rows=base_rows,
                                       baseline_infer_ms=base_infer, say=say, held_at=_spread(run, d, x, y, ids))

            item = ledger.json_unit(f"defence:{d.name}", fingerprint({"m": d.digest, "b": baseline.digest if baseline
                                                                   else None, **settings}), measure)
            say(item["finding"])
            for check in item.get("checks", []):
                if check["status"] != "ok":
                    say(f"  sanity check '{check['check']}' warns: {check['detail']}")
            results.add("defences", item)
            reports.append(item)
    return reports


def _chunks(run: DefenceRun, x: torch.Tensor, y: torch.Tensor, ids: Sequence[int]) -> list[Chunk]:
    """The sample cut into chunks of ``run.chunk`` images, whoever runs them: a random defence's
    EOT draws follow its attacker's calls within a chunk, so the same chunks give the same
    figures in process and on any number of workers."""
    return chunks_of(x, y, None, torch.tensor(list(ids)), run.chunk)


def _spread(run: DefenceRun, d: Defended, x: torch.Tensor, y: torch.Tensor,
            ids: Sequence[int]) -> Callable[[float], Held] | None:
    """A defence's three attackers at one budget, chunk by chunk on the run's runner (None: in
    this process, as one batch)."""
    runner = run.runner
    if runner is None:
        return None
    runner.register(f"defence:{d.name}", VictimSpec(obj=d.model))
    chunks = _chunks(run, x, y, ids)

    def held_at(eps: float) -> Held:
        work = partial(defence_chunk, eps, run.preset, run.eot)
        return join_held(runner.run(work, f"defence:{d.name}", chunks, run.seed, f"{d.name} {eps * 255:g}/255"))

    return held_at


def threshold_sample(dataset: Dataset, n: int, seed: int) -> tuple[torch.Tensor, dict[str, int]]:
    """``n`` validation images drawn with ``seed``, and how many of each class: the clean images a
    detector's threshold (5 % false positives) is set on. Drawn, not the first ``n``: a split
    stored class by class (LC25000's is) would set the threshold on one class's images."""
    val = dataset.split("val")
    pick = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed + 1))[:n].sort().values
    xv, yv = val.get(pick.tolist())
    names = dataset.info.class_names
    counts = yv.sum(0) if yv.dim() == 2 else torch.bincount(yv, minlength=len(names))
    return xv, {name: int(c) for name, c in zip(names, counts.tolist(), strict=True)}


def run_detectors(run: DefenceRun, model: Defended, kinds: Sequence[str], *, n_train: int = 1000,
                  n_val: int = 500, steps: int = 100, say: Say = to_log) -> list[dict[str, Any]]:
    """Fit each detector on ``n_train`` training images (threshold at 5 % false positives on
    ``n_val`` validation images) and measure it against naive and adaptive PGD at each budget."""
    ids, x, y = test_sample(run.dataset, run.n, run.seed)
    train = run.dataset.split("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.seed))[:n_train].sort().values
    xt, yt = train.get(pick.tolist())
    xv, val_classes = threshold_sample(run.dataset, n_val, run.seed)
    settings = {"eps": list(run.eps), "n": len(ids), "n_train": len(pick), "steps": steps, "seed": run.seed,
                "threshold_images": {"n": len(xv), "per_class": val_classes}}
    results = _Results(run, "detectors.json", settings)
    out = []
    with Ledger.open(run.out) as ledger:
        for kind in kinds:
            def measure(kind: str = kind) -> dict[str, Any]:
                rows = []
                start = time.perf_counter()
                for eps in run.eps:
                    say(f"{kind} detector: fit at {eps * 255:g}/255 on {len(pick)} training images, then naive and "
                        f"adaptive PGD on {len(ids)} test images")
                    det = fit_detector(kind, model.model, xt, yt, xv, eps=eps, seed=run.seed)
                    row = evaluate_detector(model.model, det, x, y, ids, eps, seed=run.seed, steps=steps)
                    rows.append(row.to_json())
                clean = evaluate(model.model, held_out(run.dataset))["accuracy"]
                rep = DefenceReport(f"{kind} detector", "detector", clean, None, [], len(ids),
                                    {"eval_s": time.perf_counter() - start}, detection=rows)
                return rep.to_json()

            # DETECTION_FORMAT: units stored before the row's counts (and LID/KD's held-out references) are redone
            fp = fingerprint({"m": model.digest, "kind": kind, "format": DETECTION_FORMAT, **settings})
            item = ledger.json_unit(f"detector:{kind}", fp, measure)
            say(item["finding"])
            results.add("defences", item)
            out.append(item)
    return out


def run_certify(run: DefenceRun, model: Defended, sigma: float, radii: Sequence[float], *, n0: int = 100,
                samples: int = 1000, alpha: float = 0.001, say: Say = to_log) -> dict[str, Any]:
    """Certified accuracy of the smoothed model at each L2 radius, with the abstain rate."""
    ids, x, y = test_sample(run.dataset, run.n, run.seed)
    settings = {"sigma": sigma, "radii": list(radii), "n": len(ids), "n0": n0, "samples": samples, "alpha": alpha,
                "seed": run.seed}
    results = _Results(run, "certify.json", settings)
    with Ledger.open(run.out) as ledger:
        def measure() -> dict[str, Any]:
            say(f"certify {model.name} at sigma {sigma:g}: {n0} + {samples} noisy copies per image, "
                f"{len(ids)} test images, confidence {1 - alpha:g}")
            start = time.perf_counter()
            cert = certify(model.model, x, ids, sigma, n0=n0, n=samples, alpha=alpha, seed=run.seed)
            acc = certified_accuracy(cert, y, radii)
            return {"name": model.name, "sigma": sigma, "certified_accuracy": {k: v for k, v in acc.items()
                                                                              if k != "abstain"},
                    "abstain": acc["abstain"], "n": len(ids), "n0": n0, "samples": samples, "alpha": alpha,
                    "wall_s": time.perf_counter() - start,
                    "paper": "Cohen, Rosenfeld & Kolter, ICML 2019"}

        item = ledger.json_unit(f"certify:{sigma:g}", fingerprint({"m": model.digest, **settings}), measure)
    results.add("certificates", item)
    return item


# -- the jobs of `medfool defend`: what the command line asks for, checked, then run -------------
Measure = Literal["evaluate", "detector", "certify"]


@dataclass(frozen=True)
class DefendJob:
    """Everything ``medfool defend evaluate | detector | certify`` needs. ``models`` are checkpoint
    paths or run folders; ``transforms`` (evaluate) are input-transform specs put in front of
    ``baseline``. ``eps`` in [0, 1] units."""

    action: Measure
    data: DataSource
    out: Path
    models: tuple[str, ...] = ()
    baseline: str | None = None
    transforms: tuple[dict[str, object], ...] = ()
    eps: tuple[float, ...] = (2 / 255, 8 / 255)
    n: int = 200
    preset: Preset = "standard"
    eot: int = 8
    seed: int = 0
    device: Device = "auto"
    kinds: tuple[str, ...] = ()          # detector: which detectors (empty: all)
    train_images: int = 1000             # detector: training images to fit on
    steps: int = 100                     # detector: adaptive attack steps
    sigma: float | None = None           # certify: None reads it from the noise-trained model's record
    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    n0: int = 100
    samples: int = 1000
    alpha: float = 0.001
    workers: int | None = None           # evaluate: the attackers on N Ray workers, chunk by chunk
    ray_address: str | None = None       # ... or on the Ray cluster at this address
    threads_per_worker: int | None = None


def run_defend(job: DefendJob, say: Say = to_log) -> Path:
    """Check everything (the models load and fit the data, a test split exists, the folder is
    writable), then measure under the folder's lock; returns the JSON file written."""
    device = resolve_device(job.device)
    if job.action == "evaluate":
        if not job.models and not job.transforms:
            raise ConfigError("name at least one defence: --model DEFENDED.safetensors or --transform SPEC")
        if job.transforms and not job.baseline:
            raise ConfigError("--transform defends the --baseline model; give --baseline")
    elif len(job.models) != 1:
        raise ConfigError(f"defend {job.action} measures one model (--model), got {len(job.models)}")
    sigma = job.sigma
    if job.action == "certify":  # refused before the data is read
        first = load_defended(job.models[0], device)
        if sigma is None:
            sigma = trained_sigma(first[1])
        if sigma is None:
            raise ConfigError(f"{job.models[0]} was not trained with Gaussian noise (its record has no noise "
                              "objective, which 'defend adv-train --method noise' writes); give --sigma")
    dataset = job.data.load()
    held_out(dataset)  # refused before anything is written
    check_writable(job.out)
    baseline = load_defended(job.baseline, device)[0] if job.baseline else None
    defended = [first[0]] if job.action == "certify" else [load_defended(path, device)[0] for path in job.models]
    defended += [transformed(baseline, spec) for spec in job.transforms if baseline]
    # evaluate names each model by its defence name, detector and certify by the path given
    origins = [d.name for d in defended] if job.action == "evaluate" else list(job.models)
    for d, origin in [*([(baseline, baseline.name)] if baseline else []), *zip(defended, origins, strict=True)]:
        match_model_to_data(d.model, dataset, origin)
    run = DefenceRun(dataset, job.out, eps=job.eps, n=job.n, preset=job.preset, eot=job.eot, seed=job.seed)
    job.out.mkdir(parents=True, exist_ok=True)
    with folder_lock(job.out):
        if job.action == "evaluate":
            with choose_runner(job.workers, job.ray_address, job.threads_per_worker, job.device, say) as runner:
                if not isinstance(runner, InProcessChunks):
                    say(f"the attackers on {runner.where}, {run.chunk} images at a time")
                run_evaluate(replace(run, runner=runner), baseline, defended, say=say)
            return job.out / "defence.json"
        if job.action == "detector":
            rows = run_detectors(run, defended[0], job.kinds or DETECTORS, n_train=job.train_images,
                                 steps=job.steps, say=say)
            _say_detections(rows, say)
            return job.out / "detectors.json"
        assert sigma is not None
        item = run_certify(run, defended[0], float(sigma), job.radii, n0=job.n0, samples=job.samples,
                           alpha=job.alpha, say=say)
        acc = ", ".join(f"r={k}: {fmt(v)}" for k, v in item["certified_accuracy"].items())
        say(f"certified accuracy at sigma {sigma:g} ({item['n']} images): {acc}; abstained on {fmt(item['abstain'])}")
        return job.out / "certify.json"


def _say_detections(rows: list[dict[str, Any]], say: Say) -> None:
    for item in rows:
        for r in item["detection"]:
            say(f"{item['name']} at {r['eps'] * 255:g}/255, on the {r['attacked']} of {r['sampled']} test images the "
                f"model classifies correctly: naive PGD fooled {r['naive_fooled']}, ROC-AUC {fmt(r['naive_auc'])}, "
                f"TPR@5%FPR {fmt(r['naive_tpr'])}; the adaptive attack fooled {r['adaptive_fooled']}, "
                f"{r['adaptive_fooled_unflagged']} of them unflagged (TPR@5%FPR {fmt(r['adaptive_tpr'])})")


def _model_file(out: Path) -> None:
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: the defended model file must end in .safetensors")
    check_writable(out.parent if str(out.parent) else Path("."))


def write_transformed(model: str, transforms: Sequence[dict[str, object]], out: Path, say: Say = to_log) -> Path:
    """``medfool defend transform``: ``model`` with input transforms in front, as one checkpoint."""
    _model_file(out)
    base, record = load_classifier(model)
    defended = with_transforms(base, list(transforms))
    save_checkpoint(defended, out, {**record, "defence": {"transforms": list(transforms), "base": model}})
    names = " -> ".join(s["name"] for s in defended.meta.preprocess)
    say(f"wrote {out}: {names} -> {base.meta.arch}. Measure it: medfool defend evaluate -m {out} "
        f"--baseline {model} -d DATASET -o OUT")
    return out


def write_ensemble(models: Sequence[str], combine: Combine, out: Path, say: Say = to_log) -> Path:
    """``medfool defend ensemble``: several checkpoints as one model (mean of logits or a vote)."""
    _model_file(out)
    members_ = [load_classifier(p)[0] for p in models]
    save_checkpoint(ensemble_classifier(members_, combine), out,
                    {"defence": {"ensemble": list(models), "combine": combine}})
    say(f"wrote {out}: {len(members_)} models, {combine} of their {'logits' if combine == 'mean' else 'votes'}")
    return out


@dataclass(frozen=True)
class AdvTrainJob:
    """``medfool defend adv-train``: a robust training objective and the training settings."""

    data: DataSource
    objective: RobustObjective
    train: TrainConfig
    out: Path | None = None   # None: runs/DATASET-ARCH-METHOD-seedN
    device: Device = "auto"
    spread: Spread | None = None  # data-parallel on Ray workers


def run_adv_train(job: AdvTrainJob, say: Say = to_log) -> Path:
    """Train with the robust objective; returns the model file written."""
    objective, cfg = job.objective, job.train
    if cfg.arch not in architectures():
        raise ConfigError(f"unknown architecture {cfg.arch!r} (known: {', '.join(architectures())})")
    if objective.eot and objective.method == "noise":
        raise ConfigError("--eot jitters stains before crafting adversarial examples; --method noise crafts nothing")
    dataset = job.data.load()
    if objective.eot and dataset.info.n_channels != 3:
        raise ConfigError(f"--eot jitters H&E stains, which needs RGB histology; {dataset.info.name} has "
                          f"{dataset.info.n_channels} channel{'s' if dataset.info.n_channels != 1 else ''}")
    out = job.out or Path(f"runs/{dataset.info.name}-{cfg.arch}-{objective.method}-seed{cfg.seed}")
    check_writable(out)
    budget = f"sigma {objective.sigma:g}" if objective.method == "noise" else f"eps {objective.eps * 255:g}/255"
    say(f"{objective.method} training {cfg.arch} on {dataset.summary()} ({budget}, {objective.attack_steps} attack "
        "step(s) per batch)")
    record = train_job(job.data, dataset, cfg, out, resolve_device(job.device), job.spread, objective, say)
    say(f"{trained_accuracy(record)} (best epoch {record['best_epoch']}/{record['epochs_run']}, "
        f"{record['train_wall_s']:.0f} s) -> {out / 'model.safetensors'}")
    return out / "model.safetensors"


def trained_accuracy(record: dict[str, Any]) -> str:
    """Test accuracy and the selected epoch's robust validation figure; without a test split,
    the validation accuracy, named as what it is (the split that selected the epoch)."""
    metrics = record["metrics"]
    which = "test" if metrics["test"] else "val (no test split; it selected the epoch)"
    text = f"{which} accuracy {fmt((metrics['test'] or metrics['val'])['accuracy'])}"
    last = record["history"][record["best_epoch"] - 1]
    if "val_robust_accuracy" in last:
        text += f", val robust accuracy (PGD-10) {fmt(last['val_robust_accuracy'])}"
    if "val_noisy_accuracy" in last:
        text += f", val accuracy under the training noise {fmt(last['val_noisy_accuracy'])} (epochs selected on it)"
    return text
