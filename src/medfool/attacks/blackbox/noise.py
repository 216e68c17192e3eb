"""Random-noise baseline: the weakest black-box attack at a given Linf budget.

Each try draws a random corner of the eps-ball (every pixel moved by +eps or -eps) and keeps
the first draw that fools the model (an image never fooled keeps its last draw). It exists as
a yardstick: if random corners fool images that a gradient attack at the same budget could
not, the gradients are misleading (gradient masking), one of the sanity checks of Croce &
Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import Attack, AttackConfig, Counter, check_int, check_norm_eps, register_attack
from medfool.attacks.goal import Goal
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import Task

__all__ = ["NoiseConfig", "RandomNoise"]


@dataclass(frozen=True, kw_only=True)
class NoiseConfig(AttackConfig):
    eps: float = 8 / 255
    tries: int = 20  # queries per image

    def validate(self) -> None:
        check_norm_eps("linf", self.eps)
        check_int("tries", self.tries, 1)


@register_attack
class RandomNoise(Attack):
    name = "noise"
    Config = NoiseConfig
    fixed_norm = "linf"
    paper = "baseline (Croce & Hein, ICML 2020, sanity checks)"
    config: NoiseConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        return Passes(forwards=self.config.tries + 2)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        x_adv = x.clone()
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.config.tries):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            signs = rng.rows(idx).randint(0, 2, idx.numel(), *x.shape[1:]) * 2 - 1
            trial = (x[idx] + self.config.eps * signs).clamp(0, 1)
            with torch.no_grad():
                won = goal.success(model(trial), idx)
            counter.count(idx, queries=1)
            x_adv[idx] = trial  # the last draw stays for images never fooled
            active[idx[won]] = False
        return x_adv
