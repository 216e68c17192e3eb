"""The reliable-evaluation ensemble: the worst case per image over diverse attacks.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (AutoAttack). APGD-CE, APGD-T (targeted DLR over the most
likely other classes; the margin where DLR is undefined), FAB-T and Square run one after
another, each only on the images no earlier member broke. Every member draws from the images'
own random streams with the run's seed, so a member inside the ensemble gives each image
exactly what it gives alone: the ensemble's robust accuracy is at or below every member's.

Presets (Linf or L2, budgets per image):

* ``standard`` (AutoAttack's): APGD-CE 100 steps; APGD-T 100 steps x 9 targets; FAB-T 100
  steps x 9 targets; Square 5,000 queries;
* ``fast`` (the demo): APGD-CE 20 steps; APGD-T 20 steps x 3 targets; FAB-T 20 steps x 3
  targets; Square 500 queries.

Square starts from windows covering 80 % of the image (``p_init`` 0.8), AutoAttack's setting
and torchattacks' default: Square is the masking check of every defence, so it runs at least
as strong as the peers' (the paper's 0.05 was chosen for 224-299 px ImageNet images, where
5 % of the pixels is already a large window; on 28 px tiles it is a 6 x 6 one).

Multi-label models get APGD-CE, APGD with the margin loss and Square (targets and FAB's class
boundaries do not apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medfool.attacks.base import (
    Attack,
    AttackConfig,
    Counter,
    check_choice,
    check_norm_eps,
    get_attack,
    register_attack,
)
from medfool.attacks.goal import Goal
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import MULTI_LABEL, PRESET_NAMES, Norm, Preset, Task

__all__ = ["PRESETS", "Ensemble", "EnsembleConfig", "members"]

PRESETS: dict[Preset, dict[str, dict[str, Any]]] = {
    "standard": {"apgd-ce": {"steps": 100}, "apgd-t": {"steps": 100, "targets": 9},
                 "fab-t": {"steps": 100, "targets": 9}, "square": {"queries": 5000, "p_init": 0.8}},
    "fast": {"apgd-ce": {"steps": 20}, "apgd-t": {"steps": 20, "targets": 3},
             "fab-t": {"steps": 20, "targets": 3}, "square": {"queries": 500, "p_init": 0.8}},
}


@dataclass(frozen=True, kw_only=True)
class EnsembleConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    preset: Preset = "standard"

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_choice("preset", self.preset, PRESET_NAMES)


def members(preset: Preset, task: Task, eps: float, norm: Norm) -> list[tuple[str, Attack]]:
    """The ensemble's attacks, in running order, as (label, attack)."""
    spec = PRESETS[preset]
    out: list[tuple[str, Attack]] = [("apgd-ce", get_attack("apgd-ce", eps=eps, norm=norm, **spec["apgd-ce"]))]
    if task == MULTI_LABEL:
        out.append(("apgd-margin", get_attack("apgd-ce", eps=eps, norm=norm, loss="margin",
                                               steps=spec["apgd-ce"]["steps"])))
    else:
        out.append(("apgd-t", get_attack("apgd-t", eps=eps, norm=norm, **spec["apgd-t"])))
        out.append(("fab-t", get_attack("fab-t", eps=eps, norm=norm, **spec["fab-t"])))
    out.append(("square", get_attack("square", eps=eps, norm=norm, **spec["square"])))
    return out


@register_attack
class Ensemble(Attack):
    name = "ensemble"
    Config = EnsembleConfig
    targeted_ok = False
    paper = "Croce & Hein, ICML 2020 (AutoAttack)"
    config: EnsembleConfig

    def max_passes(self, task: Task, classes: int) -> Passes | None:
        """Every member at its full budget on every image (the worst case: nothing breaks)."""
        cfg = self.config
        total = Passes(forwards=2)
        for _, attack in members(cfg.preset, task, cfg.eps, cfg.norm):
            cost = attack.max_passes(task, classes)
            if cost is None:
                return None
            total = total + cost
        return total

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        x_adv = x.clone()
        with torch.no_grad():
            standing = ~goal.success(model(x))
        counter.count(None, queries=1)
        broken_by = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        ids = rng.ids
        labels: list[str] = []
        for k, (label, attack) in enumerate(members(cfg.preset, model.task, cfg.eps, cfg.norm)):
            labels.append(label)
            act = standing.nonzero().flatten()
            if act.numel() == 0:
                continue
            # the member as if called on these images alone: same seed, their own ids
            chosen = None if goal.task != MULTI_LABEL else goal.label_mask.nonzero().flatten().tolist()
            r = attack(model, x[act], goal.labels[act], seed=rng.seed, ids=ids[act.cpu()], attack_labels=chosen)
            counter.gradients.index_add_(0, act, r.gradients.to(counter.gradients.device))
            counter.queries.index_add_(0, act, r.queries.to(counter.queries.device))
            won = r.success & r.clean_correct
            x_adv[act[won]] = r.x_adv[won]
            broken_by[act[won]] = k
            standing[act[won]] = False
        counter.extras["broken_by"] = broken_by
        counter.extras["members"] = labels
        return x_adv
