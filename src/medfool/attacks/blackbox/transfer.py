"""Transfer attack: craft on a model you own, use on one you can only query.

Papernot et al., "Transferability in Machine Learning", 2016; in medical imaging Finlayson
et al., "Adversarial attacks on medical machine learning", Science 2019, who crafted on an
independently trained surrogate. Any white-box attack runs on the surrogate; each
adversarial image then costs the victim two queries (its answer on the clean and on the
adversarial image). The transfer rate is the victim's success on the images both models
classified correctly and the surrogate's attack fooled.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from medfool.attacks.base import Attack, AttackResult, TargetSpec
from medfool.models.classifier import Classifier
from medfool.models.predict import PredictModel, from_classifier

__all__ = ["TransferResult", "measure_on", "transfer_attack"]


@dataclass
class TransferResult:
    on_surrogate: AttackResult
    on_victim: AttackResult

    @property
    def transfer_rate(self) -> float:
        """Victim fooled, among images both models got right and the surrogate's attack fooled."""
        s, v = self.on_surrogate, self.on_victim
        base = s.success & s.clean_correct & v.clean_correct
        n = int(base.sum())
        return float((v.success & base).sum()) / n if n else math.nan

    def summary(self) -> dict[str, Any]:
        return {"surrogate_success": self.on_surrogate.success_rate, "victim_success": self.on_victim.success_rate,
                "transfer_rate": self.transfer_rate, "victim_robust_accuracy": self.on_victim.robust_accuracy}


def measure_on(victim: PredictModel, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               config: dict[str, Any], name: str) -> AttackResult:
    """The victim's verdict on images crafted elsewhere: two queries per image."""
    start = time.perf_counter()
    clean, adv = victim.scores(x), victim.scores(x_adv)
    n = x.shape[0]
    return AttackResult.from_scores(name, config, victim.task, x, x_adv, y, clean, adv,
                                    gradients=torch.zeros(n, dtype=torch.int64, device=x.device),
                                    queries=torch.full((n,), 2, dtype=torch.int64, device=x.device),
                                    wall_s=time.perf_counter() - start, target=target)


def transfer_attack(surrogate: Classifier, victim: Classifier | PredictModel, x: torch.Tensor, y: torch.Tensor,
                    attack: Attack, *, target: TargetSpec = None, generator: torch.Generator | None = None
                    ) -> TransferResult:
    """Run ``attack`` on ``surrogate`` and hand its images to ``victim``."""
    if tuple(surrogate.meta.input_shape) != tuple(victim.meta.input_shape) or \
            len(surrogate.class_names) != len(victim.class_names):
        raise ValueError(f"surrogate and victim must share input shape and classes, got "
                         f"{surrogate.meta.input_shape} / {len(surrogate.class_names)} and "
                         f"{victim.meta.input_shape} / {len(victim.class_names)}")
    on_s = attack(surrogate, x, y, target=target, generator=generator)
    pm = victim if isinstance(victim, PredictModel) else from_classifier(victim)
    config = {"attack": "transfer", "base": on_s.config}
    return TransferResult(on_s, measure_on(pm, x, on_s.x_adv, y, on_s.target, config, f"transfer({attack.name})"))
