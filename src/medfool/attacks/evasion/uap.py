"""Universal adversarial perturbations: one perturbation that fools a whole set of images.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR 2017.

``craft`` builds the perturbation on a training set and :func:`fooling_rate` measures it on
held-out images (the fraction whose prediction changes, as in the paper). Two solvers:

* ``deepfool`` (the paper's): pass over the images in batches; for those the current
  perturbation ``v`` does not fool, DeepFool finds the minimal extra step from ``x + v``;
  their mean is added to ``v``, which is projected back to the eps-ball;
* ``sgd`` (Shafahi et al., "Universal Adversarial Training", AAAI 2020): projected sign
  ascent on the mean loss of the batch's not-yet-fooled images; the default.

Passes stop once the training fooling rate reaches ``target_rate``. Called like any other
attack on a batch, it crafts on that batch and applies the result (``extras["perturbation"]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from medfool.attacks.base import (
    Attack,
    AttackConfig,
    AttackResult,
    Counter,
    check_choice,
    check_inputs,
    check_int,
    check_norm_eps,
    check_range,
    loss_and_grad,
    register_attack,
)
from medfool.attacks.evasion.deepfool import DeepFool
from medfool.attacks.goal import Goal
from medfool.attacks.norms import ascent_direction, project
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import BINARY, MULTI_CLASS, Norm

__all__ = ["UAPConfig", "UniversalPerturbation", "fooling_rate"]


@dataclass(frozen=True, kw_only=True)
class UAPConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    solver: str = "sgd"
    passes: int = 10
    batch_size: int = 64
    step_size: float | None = None   # sgd: default eps / 10
    target_rate: float = 0.95        # stop once this fraction of the training images is fooled

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_choice("solver", self.solver, ("sgd", "deepfool"))
        check_int("passes", self.passes, 1)
        check_int("batch_size", self.batch_size, 1)
        check_range("target_rate", self.target_rate, 0.0, 1.0)
        if self.step_size is not None:
            check_range("step_size", self.step_size, 0.0, 1e4, lo_open=True)


def _labels(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.predict(x)


def fooling_rate(model: Classifier, x: torch.Tensor, v: torch.Tensor, batch: int = 256) -> float:
    """Fraction of images whose predicted class changes when ``v`` is added (clipped to [0, 1])."""
    changed = 0
    for s in range(0, x.shape[0], batch):
        xb = x[s:s + batch]
        changed += int((_labels(model, xb) != _labels(model, (xb + v).clamp(0, 1))).sum())
    return changed / max(1, x.shape[0])


@register_attack
class UniversalPerturbation(Attack):
    name = "uap"
    Config = UAPConfig
    tasks = frozenset({MULTI_CLASS, BINARY})
    targeted_ok = False
    paper = "Moosavi-Dezfooli et al., CVPR 2017"
    kind = "universal"
    config: UAPConfig

    def craft_and_apply(self, model: Classifier, craft_x: torch.Tensor, craft_y: torch.Tensor, x: torch.Tensor,
                        y: torch.Tensor, *, seed: int, target: int | None = None) -> AttackResult:
        """Craft one perturbation on the crafting images, then add it unchanged to the held-out
        ones; ``extras["fooling_history"]``: the training fooling rate after each pass."""
        if target is not None:
            raise ValueError("uap is untargeted only")
        start = time.perf_counter()
        v, history = self.craft(model, craft_x, craft_y, torch.Generator().manual_seed(seed))
        result = self.apply(model, v, x, y)
        result.wall_s = time.perf_counter() - start
        result.extras["fooling_history"] = history
        return result

    def craft(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
              counter: Counter | None = None) -> tuple[torch.Tensor, list[float]]:
        """The universal perturbation (1, C, H, W) and the training fooling rate after each pass."""
        cfg = self.config
        counter = counter or Counter(x.shape[0], x.device)
        v = torch.zeros_like(x[:1])
        alpha = cfg.step_size or cfg.eps / 10
        clean = _labels(model, x)
        history: list[float] = []
        for _ in range(cfg.passes):
            order = torch.randperm(x.shape[0], generator=gen).to(x.device)
            for s in range(0, x.shape[0], cfg.batch_size):
                idx = order[s:s + cfg.batch_size]
                xv = (x[idx] + v).clamp(0, 1)
                goal = Goal(model.task, clean[idx])  # fool = change the clean prediction
                if cfg.solver == "sgd":
                    logits, _, g = loss_and_grad(model, xv, goal, None)
                    counter.count(idx, gradients=1, queries=1)
                    # ascend on the images v does not fool yet: fooled ones would dominate the mean
                    unfooled = ~goal.success(logits)
                    if not bool(unfooled.any()):
                        continue
                    direction = ascent_direction(g[unfooled].mean(0, keepdim=True), cfg.norm)
                    v = project(v + alpha * direction, cfg.norm, cfg.eps)
                else:
                    unfooled = _labels(model, xv) == clean[idx]
                    counter.count(idx, queries=1)
                    if not bool(unfooled.any()):
                        continue
                    sub = idx[unfooled]
                    sub_goal = Goal(model.task, clean[sub])
                    # DeepFool counts per row of its sub-batch; its counts are charged to those images
                    sub_counter = Counter(sub.numel(), x.device)
                    moved = DeepFool(steps=10).run(model, xv[unfooled], sub_goal, ImageStreams(0, sub), sub_counter)
                    counter.absorb(sub, sub_counter)
                    v = project(v + (moved - xv[unfooled]).mean(0, keepdim=True), cfg.norm, cfg.eps)
            rate = fooling_rate(model, x, v)
            history.append(rate)
            if rate >= cfg.target_rate:
                break
        return v, history

    def apply(self, model: Classifier, v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        """The result of adding a crafted perturbation ``v`` to (held-out) images ``x``.

        ``extras["heldout_fooling_rate"]`` is the paper's measure (prediction changed);
        ``success`` is the usual one (label no longer predicted, counted on correct images).
        """
        check_inputs(model, x, y)
        start = time.perf_counter()
        x_adv = (x + v).clamp(0, 1)
        result = AttackResult.measure(self.name, self.config.to_json(), model, x, x_adv, y,
                                      extras={"perturbation": v})
        result.extras["heldout_fooling_rate"] = float((result.clean_pred != result.adv_pred).float().mean())
        result.wall_s = time.perf_counter() - start
        return result

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        v, history = self.craft(model, x, goal.labels, rng.generator, counter)  # universal: one generator
        counter.extras.update(perturbation=v, fooling_history=history)
        return (x + v).clamp(0, 1)
