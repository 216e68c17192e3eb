"""What an audit will cost, said before it starts.

At 224 px on a CPU a default audit takes hours (a universal patch alone is 51,200 gradient
passes); a user should learn that before the first unit, stage by stage, and choose smaller
budgets. Each unit carries its worst-case model passes (the attacks' own
:meth:`~medfool.attacks.base.Attack.max_passes`, the other stages' loop sizes); the model's
speed is measured on the audited images, in the padded batches the attacks use. The same
estimate weights the progress bar, whose units otherwise differ a thousandfold in cost.

Attacks stop early on the images they break, so the figures are upper bounds; the backdoor
stage's retraining is an estimate (training passes also compute weight gradients).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medfool.attacks import get_attack
from medfool.attacks.base import Attack, evaluating
from medfool.attacks.passes import Passes
from medfool.models.classifier import MIN_ROWS, Classifier

__all__ = ["Speed", "attack_cost", "attack_passes", "human_seconds", "measure_speed", "plan_lines", "weights"]


def attack_passes(name: str, options: dict[str, Any], model: Classifier, images: int) -> Passes | None:
    """The most passes ``images`` images can cost under one registered attack."""
    return attack_cost(get_attack(name, **options), model, images)


def attack_cost(attack: Attack, model: Classifier, images: int) -> Passes | None:
    """The most passes ``images`` images can cost under ``attack``."""
    bound = attack.max_passes(model.task, model.num_classes)
    return None if bound is None else bound * images


@dataclass(frozen=True)
class Speed:
    """Seconds per image of a forward pass and of a forward+backward pass to the input."""

    forward_s: float
    gradient_s: float
    device: str

    def seconds(self, passes: Passes) -> float:
        return passes.seconds(self.forward_s, self.gradient_s)


def measure_speed(model: Classifier, x: torch.Tensor, repeats: int = 2) -> Speed:
    """Time the model on a batch of the audited images the size the attacks send (padded
    rows; best of ``repeats`` after one warm-up), so the estimate is this model on this machine."""
    rows = MIN_ROWS if x.device.type == "cpu" else max(MIN_ROWS, min(64, x.shape[0]))
    batch = x[torch.arange(rows, device=x.device) % x.shape[0]]

    def best_of(step: Any) -> float:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            step()
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            times.append(time.perf_counter() - start)
        return min(times[1:]) / rows

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    def gradient() -> None:
        xa = batch.detach().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(xa).sum(), xa)

    with evaluating(model):  # eval mode (no BatchNorm statistics updated) and padded batches
        return Speed(best_of(forward), best_of(gradient), x.device.type)


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s" if s >= 1 else "<1 s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _count(v: float) -> str:
    return f"{v:,.0f}" if v < 1e6 else f"{v / 1e6:,.1f} M"


def plan_lines(stages: Sequence[tuple[str, int, Passes | None]], speed: Speed) -> list[str]:
    """A table of (stage, units, passes) with the time each takes at ``speed``, and the total."""
    lines = [f"estimate (worst case: attacks at their full budgets; {speed.forward_s * 1e3:.1f} ms forward, "
             f"{speed.gradient_s * 1e3:.1f} ms forward+backward per image on {speed.device}):",
             f"  {'stage':<22} {'units':>5} {'gradient passes':>16} {'forward passes':>15} {'time':>8}"]
    total, unknown = 0.0, []
    for stage, units, passes in stages:
        if passes is None:
            unknown.append(stage)
            lines.append(f"  {stage:<22} {units:>5} {'?':>16} {'?':>15} {'?':>8}")
            continue
        s = speed.seconds(passes)
        total += s
        lines.append(f"  {stage:<22} {units:>5} {_count(passes.gradients):>16} {_count(passes.forwards):>15} "
                     f"{human_seconds(s):>8}")
    more = f" + {', '.join(unknown)} (not estimated)" if unknown else ""
    lines.append(f"  {'total':<22} {sum(u for _, u, _ in stages):>5} {'':>16} {'':>15} {human_seconds(total):>8}{more}")
    return lines


def weights(costs: Sequence[Passes | None], speed: Speed) -> list[float]:
    """Each unit's share of the work for the progress bar (a unit of unknown cost counts as
    the median known unit; every unit at least a millisecond)."""
    known = sorted(speed.seconds(c) for c in costs if c is not None)
    fill = known[len(known) // 2] if known else 1.0
    return [max(1e-3, fill if c is None else speed.seconds(c)) for c in costs]
