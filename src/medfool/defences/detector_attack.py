"""Detectors measured against the naive and the adaptive attacker.

Naive: PGD-20 on the model alone (the detector unknown to the attacker), run to the end as in
the detection papers; the same PGD stopped at the first misclassification (low-confidence
images, closer to clean ones) is reported beside it. Adaptive: Carlini &
Wagner's recipe for detectors ("Adversarial examples are not easily detected", AISec 2017),
as Tramer et al. (NeurIPS 2020) apply it: one joint loss, descended by signed-gradient PGD in
the same Linf ball, that pushes the model's margin below zero *and* the detector's score below
its threshold (scores measured in units of their clean spread, squeezers with BPDA). It starts
from the naive PGD image, tries two weights of the detector term, and keeps per image the
first iterate that is both misclassified and unflagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medfool.attacks import get_attack
from medfool.attacks.goal import Goal
from medfool.defences.detectors import Detector
from medfool.models.classifier import Classifier
from medfool.models.metrics import binary_auc

__all__ = ["DetectionRow", "detector_aware_pgd", "evaluate_detector"]


def detector_aware_pgd(model: Classifier, det: Detector, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
                       eps: float, *, steps: int = 100, weights: tuple[float, ...] = (1.0, 10.0)) -> torch.Tensor:
    """Adversarial images that aim to be misclassified and unflagged (see the module docstring)."""
    thr = float(det.threshold)
    unit = det.clean_spread
    best = start.clone()
    done = torch.zeros(x.shape[0], dtype=torch.bool)
    alpha = 2.5 * eps / steps * 2
    det.bpda = True
    try:
        for c in weights:
            act = (~done).nonzero().flatten()
            if act.numel() == 0:
                break
            xa, xs, ya = x[act], start[act].clone(), y[act]
            g = Goal(model.task, ya)
            for _ in range(steps):
                xs.requires_grad_(True)
                margin = g.margin(model(xs))
                score = det.score(xs)
                loss = (margin + 0.1).clamp_min(0) + c * ((score - thr) / unit + 0.1).clamp_min(0)
                (grad,) = torch.autograd.grad(loss.sum(), xs)
                with torch.no_grad():
                    xs = (xa + (xs - alpha * grad.sign() - xa).clamp(-eps, eps)).clamp(0, 1)
                    ok = (g.margin(model(xs)) < 0) & (det.score(xs) <= thr)
                    newly = ok & ~done[act]
                    best[act[newly]] = xs[newly]
                    done[act[newly]] = True
                if bool(done[act].all()):
                    break
    finally:
        det.bpda = False
    return best


@dataclass
class DetectionRow:
    """One budget's detection figures. Counts: ``sampled`` test images, of which the model
    classifies ``correct`` correctly; those are the images ``attacked`` (naive and adaptive
    alike), of which each attacker misclassifies ``*_fooled``, and ``*_fooled_unflagged`` also
    get past the detector. Rates are over the count named: TPRs over the images that attacker
    fooled, ``adaptive_evade`` over the images attacked, ``robust_*`` over the images sampled."""

    eps: float
    naive_auc: float
    naive_tpr: float            # flagged / naive_fooled
    adaptive_auc: float
    adaptive_tpr: float         # flagged / adaptive_fooled
    adaptive_evade: float       # adaptive_fooled_unflagged / attacked
    minimal_auc: float          # against PGD stopped at the first misclassification (low confidence)
    sampled: int
    correct: int
    attacked: int               # = correct: every correctly classified image is attacked
    naive_fooled: int
    naive_fooled_unflagged: int
    adaptive_fooled: int
    adaptive_fooled_unflagged: int
    robust_naive: float         # (correct - naive_fooled_unflagged) / sampled: correct or flagged afterwards
    robust_adaptive: float      # (correct - adaptive_fooled_unflagged) / sampled

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _flag_rate(scores: torch.Tensor, thr: float) -> float:
    return float((scores > thr).float().mean()) if scores.numel() else float("nan")


def evaluate_detector(model: Classifier, det: Detector, x: torch.Tensor, y: torch.Tensor, ids: list[int], eps: float,
                      *, seed: int = 0, steps: int = 100) -> DetectionRow:
    """Detection ROC-AUC and true-positive rate at the detector's false-positive rate, for the
    naive PGD images and the adaptive ones, on images the model classified correctly."""
    goal = Goal(model.task, y)
    with torch.no_grad():
        correct = ~goal.success(model(x))
    xc, yc = x[correct], y[correct]
    ids_c = torch.tensor(ids)[correct]
    naive = get_attack("pgd", eps=eps, steps=20, early_stop=False)(model, xc, yc, seed=seed, ids=ids_c)
    clean_scores = det.scores(xc)
    naive_scores = det.scores(naive.x_adv[naive.success])
    minimal = get_attack("pgd", eps=eps, steps=20)(model, xc, yc, seed=seed, ids=ids_c)
    minimal_scores = det.scores(minimal.x_adv[minimal.success])
    adaptive_x = detector_aware_pgd(model, det, xc, yc, naive.x_adv, eps, steps=steps)
    with torch.no_grad():
        ad_fooled = Goal(model.task, yc).success(model(adaptive_x))
    ad_scores = det.scores(adaptive_x[ad_fooled])
    thr = float(det.threshold)

    def auc(adv: torch.Tensor) -> float:
        return binary_auc(torch.cat([clean_scores, adv]),
                          torch.cat([torch.zeros(clean_scores.shape[0]), torch.ones(adv.shape[0])]))

    sampled, n = x.shape[0], xc.shape[0]
    naive_passed, ad_passed = int((naive_scores <= thr).sum()), int((ad_scores <= thr).sum())
    return DetectionRow(
        eps=eps, naive_auc=auc(naive_scores), naive_tpr=_flag_rate(naive_scores, thr),
        adaptive_auc=auc(ad_scores), adaptive_tpr=_flag_rate(ad_scores, thr),
        adaptive_evade=ad_passed / max(1, n), minimal_auc=auc(minimal_scores),
        sampled=sampled, correct=n, attacked=n,
        naive_fooled=int(naive.success.sum()), naive_fooled_unflagged=naive_passed,
        adaptive_fooled=int(ad_fooled.sum()), adaptive_fooled_unflagged=ad_passed,
        robust_naive=(n - naive_passed) / max(1, sampled), robust_adaptive=(n - ad_passed) / max(1, sampled))
