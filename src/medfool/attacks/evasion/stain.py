"""Stain / colour-constancy attack: fool the model with a plausible change of staining and light.

Histology colour varies between labs, scanners and staining batches; a model that flips its
diagnosis under such a change is fragile in the field. This attack searches, per image, a
small physically-parameterised colour change (the H&E model of Ruifrok & Johnston 2001):

* haematoxylin and eosin concentrations scaled by exp(s), |s| <= ``concentration``;
* the H and E stain colour vectors moved by at most ``stain_vector`` per component (then
  renormalised), as between staining protocols (Macenko et al., ISBI 2009, estimate them per
  slide for the same reason);
* the illuminant gain of each RGB channel scaled by exp(g), |g| <= ``illuminant``.

Every pixel goes through the same change, so the result is a re-stained, re-lit tile and
not high-frequency noise; the budget is on these parameters, not an Lp ball.
Optimised by signed gradient steps on the parameters, batched, with per-image early stop.
``extras["parameters"]`` holds the parameters found. RGB models only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import Attack, AttackConfig, Counter, check_int, check_range, register_attack
from medfool.attacks.goal import Goal
from medfool.models.classifier import Classifier
from medfool.utils.hed import RGB_FROM_HED, hed_to_od, od_to_hed, od_to_rgb, rgb_to_od
from medfool.utils.rng import ImageStreams

__all__ = ["StainAttack", "StainConfig", "restain"]


@dataclass(frozen=True, kw_only=True)
class StainConfig(AttackConfig):
    concentration: float = 0.2    # |log scale| of H and E concentrations
    stain_vector: float = 0.05    # per-component change of the H and E OD vectors
    illuminant: float = 0.1       # |log gain| per RGB channel
    steps: int = 30

    def validate(self) -> None:
        check_range("concentration", self.concentration, 0.0, 2.0)
        check_range("stain_vector", self.stain_vector, 0.0, 0.5)
        check_range("illuminant", self.illuminant, 0.0, 1.0)
        check_int("steps", self.steps, 1)

    def bounds(self) -> torch.Tensor:
        """Per-parameter bounds in the order [s_H, s_E, dH(3), dE(3), g_R, g_G, g_B] (11 values)."""
        return torch.tensor([self.concentration] * 2 + [self.stain_vector] * 6 + [self.illuminant] * 3)


def restain(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-image stain parameters ``theta`` (N, 11) to RGB tiles (N, 3, H, W); identity at 0."""
    n = x.shape[0]
    hed = od_to_hed(rgb_to_od(x))
    scale = torch.cat([torch.exp(theta[:, 0:2]), torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1)
    base = RGB_FROM_HED.to(x)
    vecs = base[:2].unsqueeze(0) + theta[:, 2:8].view(n, 2, 3)
    vecs = vecs / vecs.norm(dim=2, keepdim=True) * base[:2].norm(dim=1).view(1, 2, 1)
    matrix = torch.cat([vecs, base[2:].unsqueeze(0).expand(n, 1, 3)], 1)          # (n, 3, 3)
    od = hed_to_od(hed * scale.view(n, 3, 1, 1), matrix)
    return (od_to_rgb(od) * torch.exp(theta[:, 8:11]).view(n, 3, 1, 1)).clamp(0, 1)


@register_attack
class StainAttack(Attack):
    name = "stain"
    Config = StainConfig
    paper = "Ruifrok & Johnston 2001 (stain model); Macenko et al., ISBI 2009"
    config: StainConfig

    def budget(self) -> float | None:
        return None  # the budget is on stain parameters (checked on extras["parameters"])

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError("the stain attack needs RGB (H&E) images; this model takes "
                             f"{x.shape[1]} channel(s)")
        cfg = self.config
        bounds = cfg.bounds().to(x)
        step = 2.5 * bounds / cfg.steps
        n = x.shape[0]
        theta = torch.zeros(n, 11, dtype=x.dtype, device=x.device)
        x_adv = x.clone()
        act = torch.arange(n, device=x.device)
        for _ in range(cfg.steps):
            th = theta[act].requires_grad_(True)
            with torch.enable_grad():
                xr = restain(x[act], th)
                logits = model(xr)
                loss = goal.loss(logits, act)
                (g,) = torch.autograd.grad(loss.sum(), th)
            counter.count(act, gradients=1, queries=1)
            fooled = goal.success(logits.detach(), act)
            x_adv[act[fooled]] = xr.detach()[fooled]
            keep = ~fooled
            act, th, g = act[keep], th.detach()[keep], g[keep]
            if act.numel() == 0:
                break
            theta[act] = torch.maximum(torch.minimum(th + step * g.sign(), bounds), -bounds)
        if act.numel():
            with torch.no_grad():
                x_adv[act] = restain(x[act], theta[act])
        counter.extras["parameters"] = theta
        return x_adv
