"""EOT-PGD: PGD on the expected loss over a distribution of transformations.

Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust Adversarial Examples", ICML 2018.
A perturbation that survives what happens to a slide anyway (rotation, stain variation,
defocus, sensor noise, JPEG compression) is the realistic threat. Each step averages the loss
gradient over ``samples`` random transforms of every image (one batched forward of N x
samples images). An image leaves the batch once every transformed copy in a step is fooled.
``extras["transform_success"]`` is, per image, the fraction of ``eval_samples`` fresh random
transforms of the final image that are still fooled.
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
from medfool.attacks.goal import Goal
from medfool.attacks.norms import ascent_direction, clip_box, project, random_in_ball
from medfool.attacks.transforms import TRANSFORMS, TransformSet
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import Norm

__all__ = ["EOTPGD", "EOTConfig"]


@dataclass(frozen=True, kw_only=True)
class EOTConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    steps: int = 20
    step_size: float | None = None  # default 2.5 * eps / steps
    samples: int = 8
    eval_samples: int = 32
    transforms: tuple[str, ...] = ("dihedral", "hed", "blur", "noise", "jpeg")
    p: float = 0.5                  # probability of each transform
    random_start: bool = True

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_int("steps", self.steps, 1)
        check_int("samples", self.samples, 1)
        check_int("eval_samples", self.eval_samples, 1)
        check_range("p", self.p, 0.0, 1.0)
        if isinstance(self.transforms, str):
            object.__setattr__(self, "transforms", tuple(t.strip() for t in self.transforms.split(",")))
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"transforms must be among {', '.join(TRANSFORMS)}, got {', '.join(unknown)}")
        if self.step_size is not None:
            check_range("step_size", self.step_size, 0.0, 1e4, lo_open=True)


@register_attack
class EOTPGD(Attack):
    name = "eot-pgd"
    Config = EOTConfig
    paper = "Athalye et al., ICML 2018"
    config: EOTConfig

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        tset = TransformSet(cfg.transforms, cfg.p)
        alpha = cfg.step_size or 2.5 * cfg.eps / cfg.steps
        m = cfg.samples
        x_adv = x.clone()
        act = torch.arange(x.shape[0], device=x.device)
        delta = random_in_ball(x, cfg.norm, cfg.eps, rng.rows()) if cfg.random_start else torch.zeros_like(x)
        delta = clip_box(x, delta)
        for _ in range(cfg.steps):
            xa = (x[act] + delta).requires_grad_(True)
            rep = act.repeat_interleave(m)
            with torch.enable_grad():
                xt = tset(xa.repeat_interleave(m, 0), rng.rows(act, m))                     # (|act| * m, C, H, W)
                logits = model(xt)
                loss = goal.loss(logits, rep).view(-1, m).mean(1)
                (grad,) = torch.autograd.grad(loss.sum(), xa)
            counter.count(act, gradients=m, queries=m)
            robust = goal.success(logits.detach(), rep).view(-1, m).all(1)
            x_adv[act[robust]] = xa.detach()[robust]
            keep = ~robust
            act, delta, grad = act[keep], delta[keep], grad[keep]
            if act.numel() == 0:
                break
            delta = clip_box(x[act], project(delta + alpha * ascent_direction(grad, cfg.norm), cfg.norm, cfg.eps))
        if act.numel():
            x_adv[act] = x[act] + delta
        counter.extras["transform_success"] = self._transform_success(model, x_adv, goal, tset, rng, counter)
        return x_adv

    def _transform_success(self, model: Classifier, x_adv: torch.Tensor, goal: Goal, tset: TransformSet,
                           rng: ImageStreams, counter: Counter) -> torch.Tensor:
        k = self.config.eval_samples
        n = x_adv.shape[0]
        idx = torch.arange(n, device=x_adv.device).repeat_interleave(k)
        with torch.no_grad():
            fooled = goal.success(model(tset(x_adv.clamp(0, 1).repeat_interleave(k, 0), rng.rows(None, k))), idx)
        counter.count(None, queries=k)
        return fooled.view(n, k).float().mean(1)
