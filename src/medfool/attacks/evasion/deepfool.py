"""DeepFool, batched: the minimal step to the nearest linearised decision boundary.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR 2016. L2 and Linf variants.

Batched across images (no per-image loop) and cheap per step: only the ``candidates`` classes
with the highest clean logits are considered (besides the true class), and their gradients
come from k backward passes through one forward graph. Images leave the batch as soon as
they are fooled.
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
    check_range,
    register_attack,
)
from medfool.attacks.goal import Goal, two_logits
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import BINARY, MULTI_CLASS, NORMS, Norm, Task

__all__ = ["DeepFool", "DeepFoolConfig"]


@dataclass(frozen=True, kw_only=True)
class DeepFoolConfig(AttackConfig):
    norm: Norm = "l2"
    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 4

    def validate(self) -> None:
        check_choice("norm", self.norm, NORMS)
        check_int("steps", self.steps, 1)
        check_range("overshoot", self.overshoot, 0.0, 10.0)
        check_int("candidates", self.candidates, 1)


@register_attack
class DeepFool(Attack):
    name = "deepfool"
    Config = DeepFoolConfig
    tasks = frozenset({MULTI_CLASS, BINARY})
    targeted_ok = False
    paper = "Moosavi-Dezfooli et al., CVPR 2016"
    config: DeepFoolConfig

    def budget(self) -> float | None:
        return None

    def max_passes(self, task: Task, classes: int) -> Passes:
        """Counted as one forward+backward per candidate class and step (the candidates share
        one forward: a slight overestimate)."""
        cfg = self.config
        return Passes(gradients=cfg.steps * min(cfg.candidates, max(classes, 2) - 1), forwards=2)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        y = goal.labels
        n = x.shape[0]
        with torch.no_grad():
            z0 = two_logits(model(x))
        k = min(cfg.candidates, z0.shape[1] - 1)
        # the k most likely classes other than the true one, fixed for the whole run: (n, k)
        cand = z0.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        act = torch.arange(n, device=x.device)
        for _ in range(cfg.steps):
            xa = (x[act] + (1 + cfg.overshoot) * r_tot[act]).clamp(0, 1).requires_grad_(True)
            with torch.enable_grad():
                z = two_logits(model(xa))
                ya, ca = y[act], cand[act]
                f = z.gather(1, ca) - z.gather(1, ya[:, None])  # (m, k): < 0 while the label holds
                fooled = goal.success(z.detach(), act)
                # k backward passes through one graph: faster on CPU than a vmapped batched backward
                grads = torch.stack([torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < k - 1)[0]
                                     for j in range(k)])  # (k, m, C, H, W)
            counter.count(act, gradients=k, queries=1)
            x_adv[act[fooled]] = xa.detach()[fooled]
            keep = ~fooled
            act, f, grads = act[keep], f.detach()[keep], grads[:, keep]
            if act.numel() == 0:
                break
            w = grads.transpose(0, 1).flatten(2)  # (m, k, D)
            wnorm = w.abs().sum(2) if cfg.norm == "linf" else w.norm(dim=2)  # dual norm
            dist = f.abs() / wnorm.clamp_min(1e-12)  # (m, k) distance to each linearised boundary
            best = dist.argmin(dim=1)
            rows = torch.arange(act.numel(), device=x.device)
            wl, dl = w[rows, best], dist[rows, best] + 1e-4  # (m, D), (m,)
            if cfg.norm == "linf":
                step = dl[:, None] * wl.sign()
            else:
                step = dl[:, None] * wl / wl.norm(dim=1, keepdim=True).clamp_min(1e-12)
            r_tot[act] = r_tot[act] + step.view(-1, *x.shape[1:])
        if act.numel():
            x_adv[act] = (x[act] + (1 + cfg.overshoot) * r_tot[act]).clamp(0, 1)
        return x_adv
