"""FAB-T: the targeted Fast Adaptive Boundary attack, Linf and L2.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020. For each of the ``targets`` most likely other classes in turn, and only on
the images no earlier target broke: linearise the boundary between the true class and the
target at the current point, project both the current point and the original onto that
hyperplane inside the [0, 1] box, step to a convex combination biased towards the original
(``alpha`` <= ``alpha_max``, overshoot ``eta``), and after every success step back towards the
original (``beta``). An image stops at its first adversarial point within ``eps`` (what a
robust-accuracy figure needs). No randomness without restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import (
    Attack,
    AttackConfig,
    Counter,
    check_int,
    check_norm_eps,
    check_range,
    register_attack,
)
from medfool.attacks.goal import Goal, ranked_others, two_logits
from medfool.attacks.norms import norm_of, project
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import BINARY, MULTI_CLASS, Norm, Task

__all__ = ["FABT", "FABConfig", "project_to_hyperplane"]


@dataclass(frozen=True, kw_only=True)
class FABConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    steps: int = 100
    targets: int = 9
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_int("steps", self.steps, 1)
        check_int("targets", self.targets, 1)
        check_range("alpha_max", self.alpha_max, 0.0, 1.0)
        check_range("eta", self.eta, 1.0, 10.0)
        check_range("beta", self.beta, 0.0, 1.0)


def project_to_hyperplane(p: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The smallest step d (Linf or L2) with w . d = r and p + d in [0, 1], per row; where the
    box makes it impossible, the step that gets closest. Shapes: p, w (k, D); r (k,).

    Linf: moving coordinate i by t towards sign(w_i r) gains |w_i| min(t, room_i); the gain is
    piecewise linear in t, so sorting the rooms finds the smallest t reaching |r|."""
    s = torch.sign(r).view(-1, 1)
    ws = w * s                                                   # ascend w . d towards |r|
    room = torch.where(ws > 0, 1 - p, p)                         # how far each coordinate can move
    a = ws.abs()
    need = r.abs()
    if norm == "l2":
        # gradient step scaled to reach the plane, then clipped to the box (FAB's l2 projection
        # is exact; this is its first-order version, refined by the iteration)
        d = ws * (need / a.pow(2).sum(1).clamp_min(1e-12)).view(-1, 1)
        return torch.minimum(d.abs(), room) * torch.sign(ws)
    order = room.argsort(dim=1)
    room_s, a_s = room.gather(1, order), a.gather(1, order)
    # gain at t = room_s[j]: sum_{i<=j} a_i room_i + room_s[j] * sum_{i>j} a_i
    below = (a_s * room_s).cumsum(1)
    above = a_s.sum(1, keepdim=True) - a_s.cumsum(1)
    gain = below + room_s * above
    j = (gain < need.view(-1, 1)).sum(1).clamp_max(room.shape[1] - 1)            # first segment reaching need
    prev_gain = torch.where(j > 0, below.gather(1, (j - 1).clamp_min(0)[:, None])[:, 0], torch.zeros_like(need))
    rest = a_s.sum(1) - torch.where(j > 0, a_s.cumsum(1).gather(1, (j - 1).clamp_min(0)[:, None])[:, 0],
                                    torch.zeros_like(need))
    t = (need - prev_gain) / rest.clamp_min(1e-12)
    t = torch.where(gain[:, -1] < need, room.max(1).values, t)   # unreachable: go as far as the box allows
    return torch.minimum(t.view(-1, 1), room) * torch.sign(ws) * (a > 0)


@register_attack
class FABT(Attack):
    name = "fab-t"
    Config = FABConfig
    tasks = frozenset({MULTI_CLASS, BINARY})
    targeted_ok = False
    paper = "Croce & Hein, ICML 2020 (FAB)"
    config: FABConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        cfg = self.config
        return Passes(gradients=min(cfg.targets, max(classes, 2) - 1) * cfg.steps, forwards=3)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        n = x.shape[0]
        with torch.no_grad():
            z = two_logits(model(x))
        counter.count(None, queries=1)
        y = goal.labels
        others = ranked_others(z, y)
        done = goal.success(z)
        x_adv = x.clone()
        best_norm = torch.full((n,), float("inf"), device=x.device)
        for rank in range(min(cfg.targets, z.shape[1] - 1)):
            act = (~done).nonzero().flatten()
            if act.numel() == 0:
                break
            x0, cur, tgt = x[act], x[act].clone(), others[act, rank]
            for _ in range(cfg.steps):
                xa = cur.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = two_logits(model(xa))
                    rows = torch.arange(act.numel(), device=x.device)
                    f = logits[rows, tgt] - logits[rows, y[act]]               # > 0 on the target's side
                    (w,) = torch.autograd.grad(f.sum(), xa)
                counter.count(act, gradients=1, queries=1)
                fooled = goal.success(logits.detach(), act)
                f = f.detach()
                if bool(fooled.any()):
                    size = norm_of(cur - x0, cfg.norm)
                    better = fooled & (size < best_norm[act])
                    x_adv[act[better]] = cur[better]
                    best_norm[act[better]] = size[better]
                    win = fooled & (size <= cfg.eps + 1e-7)
                    done[act[win]] = True
                    keep = ~win
                    act, x0, cur, tgt, f, w, fooled = (t[keep] for t in (act, x0, cur, tgt, f, w, fooled))
                    if act.numel() == 0:
                        break
                fw, flat = f, w.flatten(1)
                d1 = project_to_hyperplane(cur.flatten(1), flat, -fw, cfg.norm)
                r0 = -(fw + (flat * (x0 - cur).flatten(1)).sum(1))              # plane seen from the original
                d2 = project_to_hyperplane(x0.flatten(1), flat, r0, cfg.norm)
                a1, a2 = norm_of(d1, cfg.norm), norm_of(d2, cfg.norm)
                alpha = (a1 / (a1 + a2).clamp_min(1e-12)).clamp(0, cfg.alpha_max).view(-1, 1, 1, 1)
                step = ((cur + cfg.eta * d1.view_as(cur)) * (1 - alpha)
                        + (x0 + cfg.eta * d2.view_as(cur)) * alpha)
                # an image fooled above its budget steps back towards the original instead
                cur = torch.where(fooled.view(-1, 1, 1, 1), x0 + cfg.beta * (cur - x0), step.clamp(0, 1))
        # the budget holds: an image whose smallest adversarial point lies outside the eps-ball
        # gets that point projected onto the ball (the model then decides whether it still fools)
        over = ~done & torch.isfinite(best_norm)
        if bool(over.any()):
            x_adv[over] = (x[over] + project(x_adv[over] - x[over], cfg.norm, cfg.eps)).clamp(0, 1)
        return x_adv
