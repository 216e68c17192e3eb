"""Auto-PGD: step-size-free PGD with momentum and checkpointed step halving.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. Step size starts at 2 eps; at checkpoints spaced 22 %,
then 3 % less each time (at least 6 %) of the budget, a sample whose loss rose in at most
75 % of the steps since the last checkpoint, or whose best loss did not improve since a
checkpoint without halving, halves its step and restarts from its best point. Momentum 0.75.

``apgd-dlr`` uses the scale-invariant Difference-of-Logits-Ratio loss, which needs at least
three classes (four when targeted); with fewer (binary models) or for multi-label models it
falls back to the margin loss and says so in a warning.
"""

from __future__ import annotations

import logging
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
from medfool.attacks.goal import Goal, effective_loss, ranked_others, two_logits
from medfool.attacks.norms import ascent_direction, project, random_in_ball
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import BINARY, MULTI_CLASS, Loss, Norm, Task

__all__ = ["APGD", "APGDDLR", "APGDT", "APGDConfig", "APGDDLRConfig", "APGDTConfig", "loss_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class APGDConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    steps: int = 100
    restarts: int = 1
    loss: Loss = "ce"
    rho: float = 0.75
    early_stop: bool = True

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_int("steps", self.steps, 1)
        check_int("restarts", self.restarts, 1)
        check_choice("loss", self.loss, ("ce", "dlr", "margin"))
        check_range("rho", self.rho, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class APGDDLRConfig(APGDConfig):
    loss: Loss = "dlr"


def _project(x0: torch.Tensor, x_new: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    return (x0 + project(x_new - x0, norm, eps)).clamp(0.0, 1.0)


def loss_for(kind: Loss, goal: Goal, n_outputs: int, attack: str) -> Loss:
    """The loss ``attack`` will use, with a warning when DLR falls back to the margin loss."""
    used = effective_loss(kind, goal.task, n_outputs, goal.targeted)
    if used != kind:
        log.warning("%s: the DLR loss needs at least %d classes for a %s attack on a single-label model; this "
                    "%s model has %d outputs: using the margin loss instead", attack, 4 if goal.targeted else 3,
                    "targeted" if goal.targeted else "untargeted", goal.task, n_outputs)
    return used


@register_attack
class APGD(Attack):
    name = "apgd-ce"
    Config = APGDConfig
    paper = "Croce & Hein, ICML 2020"
    config: APGDConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        cfg = self.config
        return Passes(gradients=cfg.restarts * (cfg.steps + 1), forwards=2)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        kind = loss_for(self.config.loss, goal, model.meta.num_outputs, self.name)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return self.search(model, x, goal, goal, kind, rng, counter, done, x.clone())

    def search(self, model: Classifier, x: torch.Tensor, goal: Goal, loss_goal: Goal, kind: Loss,
               rng: ImageStreams, counter: Counter, done: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """APGD on the images not ``done``: ascend ``loss_goal``'s loss of ``kind``, stop an image
        at ``goal``'s success. Writes into ``x_adv`` and ``done``; returns ``x_adv``. Kept whole:
        the step-size schedule, momentum and restarts from the best point of Croce & Hein's
        Algorithm 1 share their per-image state, and one loop reads against the paper's."""
        cfg = self.config
        k_first = max(int(0.22 * cfg.steps), 1)
        k_decr, k_min = max(int(0.03 * cfg.steps), 1), max(int(0.06 * cfg.steps), 1)
        for _ in range(cfg.restarts):
            act = (~done).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            x0 = x[act]
            start = random_in_ball(x0, cfg.norm, cfg.eps, rng.rows(act))
            if cfg.norm == "linf":  # push the start to the surface of the box, as the reference does
                start = start / start.flatten(1).abs().max(1).values.clamp_min(1e-12).view(-1, 1, 1, 1) * cfg.eps
            cur = (x0 + start).clamp(0, 1)
            logits, loss, grad = loss_and_grad(model, cur, loss_goal, act, kind)
            counter.count(act, gradients=1, queries=1)
            # per-sample state, all indexed like `act`
            state = {
                "x0": x0, "cur": cur, "prev": cur.clone(), "grad": grad, "best": cur.clone(), "grad_best": grad.clone(),
                "loss_prev": loss, "loss_best": loss.clone(), "loss_best_last": loss.clone(),
                "step": torch.full((act.numel(),), 2 * cfg.eps, device=x.device),
                "n_incr": torch.zeros(act.numel(), device=x.device),
                "reduced_last": torch.ones(act.numel(), dtype=torch.bool, device=x.device),
            }
            act, state = self._drop_fooled(goal, logits, act, state, x_adv, done, cfg.early_stop)
            since_check, k = 0, k_first
            for i in range(cfg.steps):
                if act.numel() == 0:
                    break
                s = state
                a = 0.75 if i > 0 else 1.0
                step = s["step"].view(-1, 1, 1, 1)
                z = _project(s["x0"], s["cur"] + step * ascent_direction(s["grad"], cfg.norm), cfg.norm, cfg.eps)
                new = _project(s["x0"], s["cur"] + a * (z - s["cur"]) + (1 - a) * (s["cur"] - s["prev"]),
                               cfg.norm, cfg.eps)
                s["prev"], s["cur"] = s["cur"], new
                logits, loss, grad = loss_and_grad(model, new, loss_goal, act, kind)
                counter.count(act, gradients=1, queries=1)
                s["grad"] = grad
                s["n_incr"] += (loss > s["loss_prev"]).float()
                s["loss_prev"] = loss
                better = loss > s["loss_best"]
                s["best"][better] = new[better]
                s["grad_best"][better] = grad[better]
                s["loss_best"][better] = loss[better]
                act, state = self._drop_fooled(goal, logits, act, s, x_adv, done, cfg.early_stop)
                s = state
                since_check += 1
                if since_check == k and act.numel():
                    oscillating = s["n_incr"] <= k * cfg.rho
                    stalled = (~s["reduced_last"]) & (s["loss_best_last"] >= s["loss_best"])
                    reduce = oscillating | stalled
                    s["reduced_last"], s["loss_best_last"] = reduce, s["loss_best"].clone()
                    s["step"][reduce] /= 2.0
                    s["cur"][reduce] = s["best"][reduce]
                    s["grad"][reduce] = s["grad_best"][reduce]
                    s["n_incr"].zero_()
                    since_check, k = 0, max(k - k_decr, k_min)
            if act.numel():
                resisted = ~done[act]  # highest-loss point for samples that resisted
                x_adv[act[resisted]] = state["best"][resisted]
        return x_adv

    @staticmethod
    def _drop_fooled(goal: Goal, logits: torch.Tensor, act: torch.Tensor, state: dict[str, torch.Tensor],
                     x_adv: torch.Tensor, done: torch.Tensor,
                     early_stop: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fooled = goal.success(logits, act)
        if not bool(fooled.any()):
            return act, state
        x_adv[act[fooled]] = state["cur"][fooled]
        done[act[fooled]] = True
        if not early_stop:
            return act, state
        keep = ~fooled
        return act[keep], {k: v[keep] for k, v in state.items()}


@register_attack
class APGDDLR(APGD):
    name = "apgd-dlr"
    Config = APGDDLRConfig




@dataclass(frozen=True, kw_only=True)
class APGDTConfig(APGDConfig):
    loss: Loss = "dlr"
    targets: int = 9  # the most likely other classes tried, one after another

    def validate(self) -> None:
        super().validate()
        check_int("targets", self.targets, 1)


@register_attack
class APGDT(APGD):
    """APGD-T (Croce & Hein 2020): APGD with the targeted DLR loss towards each of the
    ``targets`` most likely other classes in turn, each run only on the images no earlier
    target broke. Success is untargeted (any wrong class): the targets are a search tool. With
    fewer than four classes, where targeted DLR is undefined, the targeted margin loss."""

    name = "apgd-t"
    Config = APGDTConfig
    tasks = frozenset({MULTI_CLASS, BINARY})
    targeted_ok = False
    config: APGDTConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        cfg = self.config
        targets = min(cfg.targets, max(classes, 2) - 1)
        return Passes(gradients=targets * cfg.restarts * (cfg.steps + 1), forwards=3)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        with torch.no_grad():
            z = two_logits(model(x))
        counter.count(None, queries=1)
        others = ranked_others(z, goal.labels)
        done = goal.success(z)
        x_adv = x.clone()
        for rank in range(min(self.config.targets, z.shape[1] - 1)):
            if bool(done.all()):
                break
            loss_goal = Goal(goal.task, goal.labels, others[:, rank])
            kind = effective_loss(self.config.loss, goal.task, z.shape[1], True)  # margin below 4 classes
            self.search(model, x, goal, loss_goal, kind, rng, counter, done, x_adv)
        return x_adv
