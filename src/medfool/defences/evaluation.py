"""A defence measured the way Athalye, Carlini & Wagner (ICML 2018, "Obfuscated gradients
give a false sense of security") and Tramer, Carlini, Brendel & Madry (NeurIPS 2020, "On
adaptive attacks to adversarial example defences") say it must be: by an attacker who knows it.

For each budget three attackers face the deployed model, and every adversarial image is judged
by the deployed model (its real forward pass, its own random draws):

* **naive**: the reliable ensemble's gradient attacks (APGD-CE, APGD-T, FAB-T; APGD with the
  margin loss for multi-label) on the model's gradients as they come, defence ignored;
* **masking check**: Square, score-based and gradient-free; when it beats the naive attacker
  the gradients were masked, not the model robust;
* **adaptive**: the whole ensemble on ``model.adaptive(eot)``: BPDA through every input
  transform, EOT over random ones, a vote ensemble through the mean of its members'
  log-probabilities, an ensemble attacked as the one model it is. Its scores are the
  surrogate's and its decisions the deployed model's, so no attack stops on an image the
  deployed model still gets right. The adaptive attacker keeps, per image, the best of all
  three, so its robust accuracy is at or below the other two: it is the defence's headline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from medfool.attacks.base import Attack, AttackResult
from medfool.attacks.ensemble import members
from medfool.models.classifier import Classifier, logits_to_labels
from medfool.utils.stats import accuracy_breakdown
from medfool.vocab import MULTI_LABEL, Preset, Task

__all__ = ["MASKING_GAP", "BudgetRow", "DefenceReport", "Held", "attack_defence", "constant_words", "defence_kind",
           "finding", "inference_ms", "judge", "masking_gap_words", "worst_case"]


class Held(NamedTuple):
    """Per image (N,) bool: still classified correctly, as deployed, after each attacker."""

    naive: torch.Tensor
    masking_check: torch.Tensor
    adaptive: torch.Tensor


@dataclass
class BudgetRow:
    """Robust accuracy of one defended model at one budget, per attacker (fractions of all images),
    with each attacker's per-class breakdown (:func:`medfool.utils.stats.accuracy_breakdown`)."""

    eps: float
    naive: float
    masking_check: float
    adaptive: float
    baseline: float | None = None  # the undefended model under the same ensemble, when given
    breakdown: dict[str, dict[str, Any]] = field(default_factory=dict)  # attacker -> breakdown

    @classmethod
    def of(cls, eps: float, held: Held, y: torch.Tensor, class_names: Sequence[str], *, positive: int | None = None,
           baseline: dict[str, Any] | None = None) -> BudgetRow:
        """The row of per-image outcomes; ``baseline`` is the undefended model's breakdown."""
        labels = y.tolist() if y.dim() == 1 else None
        parts = {name: accuracy_breakdown(mask.tolist(), labels, class_names, positive=positive)
                 for name, mask in held._asdict().items()}
        if baseline is not None:
            parts["baseline"] = baseline
        return cls(eps, parts["naive"]["accuracy"], parts["masking_check"]["accuracy"], parts["adaptive"]["accuracy"],
                   None if baseline is None else baseline["accuracy"], parts)

    def to_json(self) -> dict[str, Any]:
        return {"eps": self.eps, "eps_255": round(self.eps * 255, 3), "naive": self.naive,
                "masking_check": self.masking_check, "adaptive": self.adaptive, "baseline": self.baseline,
                "breakdown": self.breakdown}


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
    random: bool = False  # the deployed model draws random numbers (judged by its own draw per image)
    checks: list[dict[str, str]] = field(default_factory=list)  # the gradient-masking sanity checks

    @property
    def finding(self) -> str:
        return finding(self)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "random": self.random, "n": self.n,
                "clean_accuracy": self.clean_accuracy, "baseline_clean_accuracy": self.baseline_clean_accuracy,
                "rows": [r.to_json() for r in self.rows], "cost": self.cost, "detection": self.detection,
                "notes": self.notes, "checks": self.checks, "finding": self.finding}


def defence_kind(model: Classifier, record: dict[str, Any]) -> str:
    """What kind of defence a loaded checkpoint is, from its metadata and training record; a
    defence that draws random numbers when deployed says so."""
    if model.meta.arch == "ensemble":
        kind = f"ensemble ({model.meta.arch_kwargs.get('combine', 'mean')})"
    elif model.meta.preprocess:
        kind = "input transform"
    else:
        objective = record.get("objective") or {}
        kind = f"robust training ({objective['method']})" if objective else "model"
    return f"{kind}, random" if model.randomised else kind


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
        text = (f"{report.name} looks protective against a naive attacker (robust accuracy {_pct(r.naive)} at "
                f"{eps}) but an attacker who knows it drops it to {_pct(r.adaptive)}{base}{clean}.")
    elif r.baseline is not None and r.adaptive - r.baseline >= 0.1:
        text = (f"Against an attacker who knows it, {report.name} raises robust accuracy at {eps} from "
                f"{_pct(r.baseline)} undefended to {_pct(r.adaptive)}{clean}.")
    else:
        text = (f"{report.name} does not protect: robust accuracy {_pct(r.adaptive)} at {eps} under the adaptive "
                f"attacker{base}{clean}.")
    return text + constant_words(r.breakdown.get("adaptive", {})) + masking_gap_words(r)


# a gap this large between the gradient-free check and the gradient attackers is worth words
MASKING_GAP = 0.05


def masking_gap_words(row: BudgetRow) -> str:
    """A sentence when the gradient-free masking check beats the naive gradient attackers by
    MASKING_GAP or more: smaller than the textbook 30-point masking of JPEG, but a sign that
    the deployed gradients mislead (saturation, rounding, randomness)."""
    gap = row.naive - row.masking_check
    if gap < MASKING_GAP:
        return ""
    return (f" The gradient-free masking check leaves {_pct(row.masking_check)} against the gradient attackers' "
            f"{_pct(row.naive)} ({100 * gap:.0f} points lower): the deployed gradients hide part of the weakness.")


def constant_words(b: dict[str, Any]) -> str:
    """How the figure stands against a constant answer, where the sample is imbalanced enough to
    matter (the balanced figure then says more than the plain one)."""
    if "constant" not in b or "balanced" not in b:
        return ""
    return (f" A constant answer ({b['majority']}) would keep {_pct(b['constant'])}; balanced robust accuracy "
            f"{_pct(b['balanced'])}.")


def _correct(logits: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    pred = logits_to_labels(logits, task)
    return (pred == y).all(dim=1) if task == MULTI_LABEL else pred == y


@torch.no_grad()
def judge(deployed: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) bool: still classified correctly by the model as deployed (its own draws, its vote)."""
    with deployed.padded():
        return _correct(deployed(x_adv), y, deployed.task)


def worst_case(attacker_view: Classifier, deployed: Classifier, attacks: Sequence[tuple[str, Attack]],
               x: torch.Tensor, y: torch.Tensor, ids: list[int], seed: int,
               standing: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the attacks one after another on the images still classified correctly by the
    deployed model; returns (still correct (N,), the adversarial batch)."""
    ok = judge(deployed, x, y) if standing is None else standing.clone()
    x_adv = x.clone()
    id_tensor = torch.tensor(ids)
    for _, attack in attacks:
        act = ok.nonzero().flatten()
        if act.numel() == 0:
            break
        r: AttackResult = attack(attacker_view, x[act], y[act], seed=seed, ids=id_tensor[act.cpu()])
        held = judge(deployed, r.x_adv, y[act])
        broken = act[~held]
        x_adv[broken] = r.x_adv[~held]
        ok[broken] = False
    return ok, x_adv


def attack_defence(deployed: Classifier, x: torch.Tensor, y: torch.Tensor, ids: list[int], eps: float, *,
                   preset: Preset = "fast", seed: int = 0, eot: int = 8) -> Held:
    """Which images the deployed model keeps at Linf ``eps`` against the naive attacker, the
    masking check and the adaptive attacker (the per-image worst case of all three)."""
    attacks = members(preset, deployed.task, eps, "linf")
    gradient = [a for a in attacks if a[0] != "square"]
    square = [a for a in attacks if a[0] == "square"]
    naive, _ = worst_case(deployed, deployed, gradient, x, y, ids, seed)
    masked, _ = worst_case(deployed, deployed, square, x, y, ids, seed)
    adaptive = naive & masked
    if deployed.adapts:
        with deployed.adaptive(eot=eot) as view:
            adaptive, _ = worst_case(view, deployed, attacks, x, y, ids, seed, standing=adaptive)
    # else the model has nothing to adapt to: the ensemble on it is the two runs above, image by
    # image (every member gives an image the same answer whatever else is in its batch)
    return Held(naive, masked, adaptive)


@torch.no_grad()
def inference_ms(model: Classifier, x: torch.Tensor, repeats: int = 3) -> float:
    """Milliseconds per image of a forward pass over the batch (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / max(1, x.shape[0])
