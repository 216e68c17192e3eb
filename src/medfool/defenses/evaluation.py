"""A defence measured the way Athalye, Carlini & Wagner (ICML 2018, "Obfuscated gradients
give a false sense of security") and Tramer, Carlini, Brendel & Madry (NeurIPS 2020, "On
adaptive attacks to adversarial example defenses") say it must be: by an attacker who knows it.

For each budget three attackers face the deployed model, and every adversarial image is judged
by the deployed model (its real forward pass, its own random draws):

* **naive**: the reliable ensemble's gradient attacks (APGD-CE, APGD-T, FAB-T; APGD with the
  margin loss for multi-label) on the model's gradients as they come, defence ignored;
* **masking check**: Square, score-based and gradient-free; when it beats the naive attacker
  the gradients were masked, not the model robust;
* **adaptive**: the whole ensemble on ``model.adaptive(eot)``: BPDA through every input
  transform and vote, EOT over random ones, an ensemble attacked as the one model it is. The
  adaptive attacker keeps, per image, the best of all three, so its robust accuracy is at or
  below the other two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medfool.attacks.base import Attack, AttackResult
from medfool.attacks.ensemble import members
from medfool.models.classifier import Classifier, logits_to_labels

__all__ = ["BudgetRow", "DefenceReport", "attack_defence", "defence_kind", "finding", "inference_ms",
           "worst_case"]


@dataclass
class BudgetRow:
    """Robust accuracy of one defended model at one budget, per attacker (fractions of all images)."""

    eps: float
    naive: float
    masking_check: float
    adaptive: float
    baseline: float | None = None  # the undefended model under the same ensemble, when given

    def to_json(self) -> dict[str, Any]:
        return {"eps": self.eps, "eps_255": round(self.eps * 255, 3), "naive": self.naive,
                "masking_check": self.masking_check, "adaptive": self.adaptive, "baseline": self.baseline}


@dataclass
class DefenceReport:
    name: str
    kind: str
    clean_accuracy: float
    baseline_clean_accuracy: float | None
    rows: list[BudgetRow]
    n: int
    cost: dict[str, float] = field(default_factory=dict)
    detection: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def finding(self) -> str:
        return finding(self)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "n": self.n, "clean_accuracy": self.clean_accuracy,
                "baseline_clean_accuracy": self.baseline_clean_accuracy, "rows": [r.to_json() for r in self.rows],
                "cost": self.cost, "detection": self.detection, "notes": self.notes, "finding": self.finding}


def defence_kind(model: Classifier, record: dict[str, Any]) -> str:
    """What kind of defence a loaded checkpoint is, from its metadata and training record."""
    if model.meta.arch == "ensemble":
        return "ensemble"
    if model.meta.preprocess:
        return "input transform"
    objective = record.get("objective") or {}
    return f"robust training ({objective['method']})" if objective else "model"


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def finding(report: DefenceReport) -> str:
    """One plain-words sentence on the largest budget measured."""
    if report.detection:
        d = max(report.detection, key=lambda r: r["eps"])
        return (f"{report.name} flags {_pct(d['naive_tpr'])} of naive PGD images at 5 % false alarms "
                f"(ROC-AUC {d['naive_auc']:.3f}), but an attacker who knows it gets {_pct(d['adaptive_evade'])} "
                f"of the images it attacks misclassified and past it (true-positive rate {_pct(d['adaptive_tpr'])}) "
                f"at {d['eps'] * 255:g}/255.")
    if not report.rows:
        return f"{report.name}: no budget measured."
    r = max(report.rows, key=lambda row: row.eps)
    eps = f"{r.eps * 255:g}/255"
    base = "" if r.baseline is None else f" (undefended: {_pct(r.baseline)})"
    clean = f"; clean accuracy {_pct(report.clean_accuracy)}"
    if report.baseline_clean_accuracy is not None:
        clean += f" vs {_pct(report.baseline_clean_accuracy)} undefended"
    if r.naive - r.adaptive >= 0.1:
        return (f"{report.name} looks protective against a naive attacker (robust accuracy {_pct(r.naive)} at "
                f"{eps}) but an attacker who knows it drops it to {_pct(r.adaptive)}{base}{clean}.")
    if r.baseline is not None and r.adaptive - r.baseline >= 0.1:
        return (f"Against an attacker who knows it, {report.name} raises robust accuracy at {eps} from "
                f"{_pct(r.baseline)} undefended to {_pct(r.adaptive)}{clean}.")
    return f"{report.name} does not protect: robust accuracy {_pct(r.adaptive)} at {eps} under the adaptive " \
           f"attacker{base}{clean}."


def _correct(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    pred = logits_to_labels(logits, task)
    return (pred == y).all(dim=1) if task == "multi-label" else pred == y


@torch.no_grad()
def _judge(deployed: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with deployed.padded():
        return _correct(deployed(x_adv), y, deployed.task)


def worst_case(attacker_view: Classifier, deployed: Classifier, attacks: Sequence[tuple[str, Attack]],
               x: torch.Tensor, y: torch.Tensor, ids: list[int], seed: int,
               standing: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the attacks one after another on the images still classified correctly by the
    deployed model; returns (still correct (N,), the adversarial batch)."""
    with torch.no_grad():
        ok = _judge(deployed, x, y) if standing is None else standing.clone()
    x_adv = x.clone()
    id_tensor = torch.tensor(ids)
    for _, attack in attacks:
        act = ok.nonzero().flatten()
        if act.numel() == 0:
            break
        r: AttackResult = attack(attacker_view, x[act], y[act], seed=seed, ids=id_tensor[act.cpu()])
        held = _judge(deployed, r.x_adv, y[act])
        broken = act[~held]
        x_adv[broken] = r.x_adv[~held]
        ok[broken] = False
    return ok, x_adv


def attack_defence(deployed: Classifier, x: torch.Tensor, y: torch.Tensor, ids: list[int], eps: float, *,
                   preset: str = "fast", seed: int = 0, eot: int = 8) -> tuple[float, float, float]:
    """(naive, masking check, adaptive) robust accuracy of the deployed model at Linf ``eps``."""
    attacks = members(preset, deployed.task, eps, "linf")
    gradient = [a for a in attacks if a[0] != "square"]
    square = [a for a in attacks if a[0] == "square"]
    naive, _ = worst_case(deployed, deployed, gradient, x, y, ids, seed)
    masked, _ = worst_case(deployed, deployed, square, x, y, ids, seed)
    adaptive = naive & masked
    if deployed.defence_layers:
        with deployed.adaptive(eot=eot) as view:
            adaptive, _ = worst_case(view, deployed, attacks, x, y, ids, seed, standing=adaptive)
    # else the model has nothing to adapt to: the ensemble on it is the two runs above, image by
    # image (every member gives an image the same answer whatever else is in its batch)
    return float(naive.float().mean()), float(masked.float().mean()), float(adaptive.float().mean())


@torch.no_grad()
def inference_ms(model: Classifier, x: torch.Tensor, repeats: int = 3) -> float:
    """Milliseconds per image of a forward pass over the batch (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / max(1, x.shape[0])
