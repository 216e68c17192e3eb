"""Transferred patches: crafted on a surrogate model, applied to the victim.

Finlayson et al. (Science 2019) craft patches on an independently trained model to show that
an attacker needs no access to the deployed one. The surrogate here is any other classifier
over the same classes (another seed, training split or architecture); the patch is measured
on both models at the same placements, so the two rates differ only by the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackResult
from medfool.attacks.patch.optimised import AdversarialPatch, Patch
from medfool.models.classifier import Classifier

__all__ = ["Transfer", "transfer_patch"]


@dataclass
class Transfer:
    patch: Patch
    on_surrogate: AttackResult  # white-box rate: the model the patch was crafted on
    on_victim: AttackResult     # transfer rate

    def summary(self) -> dict[str, float]:
        return {"surrogate_success": self.on_surrogate.success_rate, "victim_success": self.on_victim.success_rate,
                "surrogate_clean_correct": int(self.on_surrogate.clean_correct.sum()),
                "victim_clean_correct": int(self.on_victim.clean_correct.sum())}


def transfer_patch(attack: AdversarialPatch, surrogate: Classifier, victim: Classifier, craft_x: torch.Tensor,
                   craft_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, target: int | None, seed: int = 0,
                   patch: Patch | None = None) -> Transfer:
    """Craft on ``surrogate`` (unless ``patch`` is given), then apply to both models at the
    same random placements of the held-out images."""
    if patch is None:
        patch = attack.craft(surrogate, craft_x, craft_y, torch.Generator().manual_seed(seed), target=target)
    on_s = attack.apply(surrogate, patch, x, y, torch.Generator().manual_seed(seed + 1))
    on_v = attack.apply(victim, patch, x, y, torch.Generator().manual_seed(seed + 1))
    return Transfer(patch, on_s, on_v)
