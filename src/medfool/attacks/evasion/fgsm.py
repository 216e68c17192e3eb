"""Fast Gradient Sign Method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
One step of size eps along the sign of the loss gradient (Linf), or along the normalised
gradient (the L2 "fast gradient method").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import (
    Attack,
    AttackConfig,
    Counter,
    check_choice,
    check_norm_eps,
    loss_and_grad,
    register_attack,
)
from medfool.attacks.goal import Goal
from medfool.attacks.norms import ascent_direction, clip_box
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import Loss, Norm, Task

__all__ = ["FGSM", "FGSMConfig"]


@dataclass(frozen=True, kw_only=True)
class FGSMConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    loss: Loss = "ce"

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_choice("loss", self.loss, ("ce", "margin"))


@register_attack
class FGSM(Attack):
    name = "fgsm"
    Config = FGSMConfig
    paper = "Goodfellow et al., ICLR 2015"
    config: FGSMConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        return Passes(gradients=1, forwards=2)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        _, _, grad = loss_and_grad(model, x, goal, None, self.config.loss)
        counter.count(None, gradients=1, queries=1)
        return x + clip_box(x, self.config.eps * ascent_direction(grad, self.config.norm))
