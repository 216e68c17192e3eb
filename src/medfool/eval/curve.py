"""Robustness over a list of budgets in one call: the security curve (one attack per budget on
the same images and seed).

Robust accuracy counts every image (still correct after the attack); attack success rate
counts only the images the model got right before the attack, so a weak model does not look
like a strong attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medfool.attacks import get_attack
from medfool.attacks.base import TargetSpec
from medfool.models.classifier import Classifier

__all__ = ["CurvePoint", "security_curve"]


@dataclass(frozen=True)
class CurvePoint:
    eps: float
    robust_accuracy: float
    success_rate: float
    clean_accuracy: float
    n: int
    median_l2: float
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "eps_255": round(self.eps * 255, 3)}


def security_curve(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, attack: str = "pgd",
                   eps_list: list[float], seed: int = 0, target: TargetSpec = None,
                   **options: Any) -> list[CurvePoint]:
    """Run ``attack`` at every eps in ``eps_list`` on the same images and seed."""
    if not eps_list:
        raise ValueError("eps_list must hold at least one epsilon")
    points = []
    for eps in eps_list:
        r = get_attack(attack, eps=eps, **options)(model, x, y, seed=seed, target=target)
        s = r.summary()
        points.append(CurvePoint(eps=eps, robust_accuracy=r.robust_accuracy, success_rate=r.success_rate,
                                 clean_accuracy=float(r.clean_correct.float().mean()), n=int(x.shape[0]),
                                 median_l2=s["median_l2"], wall_s=r.wall_s))
    return points
