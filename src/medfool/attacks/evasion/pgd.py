"""Projected Gradient Descent (Madry et al.) and the Basic Iterative Method (Kurakin et al.).

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. Kurakin, Goodfellow & Bengio, "Adversarial examples in the
physical world", ICLR workshop 2017 (BIM: PGD without the random start).

Each step is one forward+backward on the samples still resisting; the same forward tells
which samples are already fooled, and those leave the batch (``early_stop``), so a batch
whose images break early costs fewer steps than the fixed schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import (
    Attack,
    AttackConfig,
    Counter,
    check_choice,
    check_int,
    check_norm_eps,
    check_range,
    loss_and_grad,
    register_attack,
)
from medfool.attacks.goal import Goal
from medfool.attacks.norms import ascent_direction, clip_box, project, random_in_ball
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import LOSSES, Loss, Norm, Task

__all__ = ["BIM", "PGD", "BIMConfig", "PGDConfig", "pgd_loop"]


@dataclass(frozen=True, kw_only=True)
class PGDConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    steps: int = 10
    step_size: float | None = None  # default: 2.5 * eps / steps (Madry et al.)
    random_start: bool = True
    restarts: int = 1
    early_stop: bool = True
    loss: Loss = "ce"

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_int("steps", self.steps, 1)
        check_int("restarts", self.restarts, 1)
        if self.step_size is not None:
            check_range("step_size", self.step_size, 0.0, 1e4, lo_open=True)
        check_choice("loss", self.loss, LOSSES)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@register_attack
class PGD(Attack):
    name = "pgd"
    Config = PGDConfig
    paper = "Madry et al., ICLR 2018"
    config: PGDConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        cfg = self.config
        return Passes(gradients=cfg.restarts * cfg.steps, forwards=cfg.restarts + 1)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        return pgd_loop(model, x, goal, rng, counter, self.config)


def pgd_loop(model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams, counter: Counter,
             cfg: PGDConfig) -> torch.Tensor:
    """The shared PGD iteration (also used by BIM, EOT-PGD and adversarial training)."""
    n = x.shape[0]
    x_adv = x.clone()
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    for restart in range(cfg.restarts):
        active = (~done).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        x0 = x[active]
        delta = random_in_ball(x0, cfg.norm, cfg.eps, rng.rows(active)) if cfg.random_start else torch.zeros_like(x0)
        delta = clip_box(x0, delta)
        for _step in range(cfg.steps):
            logits, _, grad = loss_and_grad(model, x0 + delta, goal, active, cfg.loss)
            counter.count(active, gradients=1, queries=1)
            fooled = goal.success(logits, active) if cfg.early_stop else None
            if fooled is not None and bool(fooled.any()):
                x_adv[active[fooled]] = (x0 + delta)[fooled]
                done[active[fooled]] = True
                keep = ~fooled
                active, x0, delta, grad = active[keep], x0[keep], delta[keep], grad[keep]
                if active.numel() == 0:
                    break
            delta = delta + cfg.alpha * ascent_direction(grad, cfg.norm)
            delta = clip_box(x0, project(delta, cfg.norm, cfg.eps))
        if active.numel() == 0:
            continue
        # unfooled samples keep the last iterate; a later restart overwrites it only if it fools them
        x_adv[active] = x0 + delta
        if restart < cfg.restarts - 1:  # the caller checks the final batch anyway: no forward needed
            with torch.no_grad():
                done[active[goal.success(model(x0 + delta), active)]] = True
            counter.count(active, queries=1)
    return x_adv


@dataclass(frozen=True, kw_only=True)
class BIMConfig(PGDConfig):
    random_start: bool = False
    step_size: float | None = None  # default: eps / steps, so the budget is reachable exactly

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / self.steps


@register_attack
class BIM(PGD):
    name = "bim"
    Config = BIMConfig
    paper = "Kurakin et al., ICLR workshop 2017"
