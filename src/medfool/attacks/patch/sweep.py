"""Patch size sweep: targeted success as the patch grows, next to the natural-patch baselines."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from medfool.attacks.patch.natural import natural_patch
from medfool.attacks.patch.optimised import AdversarialPatch, PatchConfig
from medfool.models.classifier import Classifier

__all__ = ["DEFAULT_AREAS", "size_sweep"]

DEFAULT_AREAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.25)


def size_sweep(model: Classifier, craft_x: torch.Tensor, craft_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               *, target: int, config: PatchConfig | None = None, areas: tuple[float, ...] = DEFAULT_AREAS,
               seed: int = 0, done: Mapping[float, dict[str, Any]] | None = None,
               on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """For each area: craft on (craft_x, craft_y), measure on held-out (x, y) without the target
    class; also the natural patch and its same-class control at the same size.

    Rates are over the held-out images the model classified correctly before. Rows in ``done``
    (keyed by area, from an interrupted run with the same settings) are kept as they are;
    ``on_row`` sees each new row as soon as it is measured, so a caller can save it.
    """
    keep = y != target
    x, y = x[keep], y[keep]
    rows = []
    for area in areas:
        if done and area in done:
            rows.append(dict(done[area]))
            continue
        attack = AdversarialPatch(replace(config or PatchConfig(), area=area))
        patch = attack.craft(model, craft_x, craft_y, torch.Generator().manual_seed(seed), target=target)
        k = patch.pixels.shape[-1]
        adv = attack.apply(model, patch, x, y, torch.Generator().manual_seed(seed + 1))
        nat = natural_patch(model, craft_x, craft_y, x, y, k, torch.Generator().manual_seed(seed + 2), target=target)
        ctl = natural_patch(model, craft_x, craft_y, x, y, k, torch.Generator().manual_seed(seed + 3), target=target,
                            control=True)
        row = {"area": area, "side": k, "covered": k * k / (x.shape[2] * x.shape[3]),
               "adversarial": adv.success_rate, "natural": nat.success_rate, "control": ctl.success_rate,
               "n": int(x.shape[0]), "clean_correct": int(adv.clean_correct.sum())}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
