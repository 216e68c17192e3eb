"""Defence runs: measure defended models (naive vs adaptive attacker), detectors and smoothed
certificates on a dataset's test images, writing OUT/defence.json, OUT/detectors.json or
OUT/certify.json as each unit finishes.

Every unit (one defended model, one detector, one certificate) is recorded in OUT/run.sqlite
under the fingerprint of its model files and settings, so an interrupted run resumes where it
stopped and a rerun with the same settings costs nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medfool.attacks.ensemble import members
from medfool.data.dataset import Dataset, Split
from medfool.defenses.detector_attack import evaluate_detector
from medfool.defenses.detectors import fit_detector
from medfool.defenses.evaluation import BudgetRow, DefenceReport, attack_defence, inference_ms, worst_case
from medfool.defenses.smoothing import certified_accuracy, certify
from medfool.errors import DataError
from medfool.eval.sanity import model_checks
from medfool.models.classifier import Classifier
from medfool.models.metrics import evaluate
from medfool.runs.common import Say, quiet
from medfool.runs.ledger import Ledger
from medfool.utils.io import atomic_write_json, json_safe
from medfool.utils.repro import environment, fingerprint
from medfool.utils.stats import accuracy_breakdown, positive_class
from medfool.vocab import Preset

__all__ = ["DefenceRun", "Defended", "held_out", "run_certify", "run_detectors", "run_evaluate", "test_sample"]



DETECTION_FORMAT = 2  # raise when a detector unit's stored result would no longer match what is computed


@dataclass(frozen=True)
class Defended:
    """A defended model to measure: its name, kind, the model and its training cost."""

    name: str
    kind: str
    model: Classifier
    digest: str           # what identifies it (file digests, settings) for resuming
    train_s: float | None = None


@dataclass(frozen=True)
class DefenceRun:
    dataset: Dataset
    out: Path
    eps: tuple[float, ...] = (2 / 255, 8 / 255)
    n: int = 200
    preset: Preset = "standard"
    eot: int = 8
    seed: int = 0


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


def _unit(ledger: Ledger, name: str, fp: str, compute: Any) -> dict[str, Any]:
    saved = ledger.get(name, fp)
    if saved is not None:
        result: dict[str, Any] = json.loads(saved)
        return result
    result = compute()
    ledger.put(name, fp, json.dumps(json_safe(result)).encode(), "json")
    return result


def run_evaluate(run: DefenceRun, baseline: Defended | None, defended: Sequence[Defended], *,
                 say: Say = quiet) -> list[dict[str, Any]]:
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
        base_clean = None
        if baseline is not None:
            def base() -> dict[str, Any]:
                say(f"undefended {baseline.name}: the full ensemble ({run.preset}) at "
                    f"{', '.join(f'{e * 255:g}/255' for e in run.eps)}")
                out = {"clean_accuracy": evaluate(baseline.model, test)["accuracy"], "robust": {}}
                for eps in run.eps:
                    ok, _ = worst_case(baseline.model, baseline.model, members(run.preset, baseline.model.task, eps,
                                                                                "linf"), x, y, ids, run.seed)
                    out["robust"][f"{eps:.6f}"] = breakdown(ok)
                out["infer_ms"] = inference_ms(baseline.model, x)
                return out

            b = _unit(ledger, "baseline", fingerprint({"m": baseline.digest, **settings}), base)
            base_clean = b["clean_accuracy"]
            base_rows = {float(k): v for k, v in b["robust"].items()}
        for d in defended:
            def measure(d: Defended = d) -> dict[str, Any]:
                start = time.perf_counter()
                say(f"{d.name}: naive, masking-check and adaptive attackers at "
                    f"{', '.join(f'{e * 255:g}/255' for e in run.eps)} on {len(ids)} test images")
                rows = []
                for eps in run.eps:
                    held = attack_defence(d.model, x, y, ids, eps, preset=run.preset, seed=run.seed, eot=run.eot)
                    row = BudgetRow.of(eps, held, y, names, positive=positive, baseline=base_rows.get(round(eps, 6)))
                    rows.append(row)
                    a = row.breakdown["adaptive"]
                    say(f"  {eps * 255:g}/255: robust accuracy naive {row.naive:.1%}, masking check "
                        f"{row.masking_check:.1%}, adaptive {row.adaptive:.1%} [{a['ci95'][0]:.1%}, "
                        f"{a['ci95'][1]:.1%}]" + (f", balanced {a['balanced']:.1%}, constant answer "
                                                  f"{a['constant']:.1%}" if "balanced" in a else ""))
                cost: dict[str, float] = {"infer_ms": inference_ms(d.model, x), "eval_s": time.perf_counter() - start}
                if d.train_s is not None:
                    cost["train_s"] = d.train_s
                if baseline is not None:
                    cost["baseline_infer_ms"] = b["infer_ms"]
                report = DefenceReport(d.name, d.kind, evaluate(d.model, test)["accuracy"], base_clean, rows, len(ids),
                                       cost, random=d.model.randomised, checks=model_checks(d.model, x[:32], y[:32]))
                return report.to_json()

            item = _unit(ledger, f"defence:{d.name}", fingerprint({"m": d.digest, "b": baseline.digest if baseline
                                                                   else None, **settings}), measure)
            say(item["finding"])
            for check in item.get("checks", []):
                if check["status"] != "ok":
                    say(f"  sanity check '{check['check']}' warns: {check['detail']}")
            results.add("defences", item)
            reports.append(item)
    return reports


def run_detectors(run: DefenceRun, model: Defended, kinds: Sequence[str], *, n_train: int = 1000,
                  steps: int = 100, say: Say = quiet) -> list[dict[str, Any]]:
    """Fit each detector on ``n_train`` training images (threshold at 5 % false positives on
    validation images) and measure it against naive and adaptive PGD at each budget."""
    ids, x, y = test_sample(run.dataset, run.n, run.seed)
    train, val = run.dataset.split("train"), run.dataset.split("val")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.seed))[:n_train].sort().values
    xt, yt = train.get(pick.tolist())
    xv, _ = val.get(range(min(len(val), 500)))
    settings = {"eps": list(run.eps), "n": len(ids), "n_train": len(pick), "steps": steps, "seed": run.seed}
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
            item = _unit(ledger, f"detector:{kind}", fp, measure)
            say(item["finding"])
            results.add("defences", item)
            out.append(item)
    return out


def run_certify(run: DefenceRun, model: Defended, sigma: float, radii: Sequence[float], *, n0: int = 100,
                samples: int = 1000, alpha: float = 0.001, say: Say = quiet) -> dict[str, Any]:
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

        item = _unit(ledger, f"certify:{sigma:g}", fingerprint({"m": model.digest, **settings}), measure)
    results.add("certificates", item)
    return item
