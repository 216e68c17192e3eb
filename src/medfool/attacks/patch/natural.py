"""Natural patches: cut-and-paste crops of real tiles, the baseline an optimised patch must beat.

Finlayson et al. (Science 2019) compare adversarial patches with a natural-looking control.
Here each victim image receives a crop of the same size as the adversarial patch, taken at
a random place from a random training tile of the *target* class (does simply showing the
model a piece of, say, benign tissue flip it?), or, as a control, from a tile of the victim's
*own* class (a patch of the same tissue should change nothing).
"""

from __future__ import annotations

import time

import torch

from medfool.attacks.base import AttackResult, check_inputs
from medfool.attacks.patch.placement import paste, patch_mask, sample_placements
from medfool.models.classifier import Classifier

__all__ = ["natural_patch", "random_crops"]


def random_crops(pool: torch.Tensor, n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """n crops (n, C, k, k) from random images of ``pool`` (M, C, H, W) at random places."""
    m, _, h, w = pool.shape
    src = torch.randint(0, m, (n,), generator=gen)
    top = torch.randint(0, h - k + 1, (n,), generator=gen)
    left = torch.randint(0, w - k + 1, (n,), generator=gen)
    rows = (top.view(n, 1, 1) + torch.arange(k).view(1, k, 1)).to(pool.device)
    cols = (left.view(n, 1, 1) + torch.arange(k).view(1, 1, k)).to(pool.device)
    crops = pool[src.to(pool.device).view(n, 1, 1), :, rows, cols]  # (n, k, k, C)
    return crops.permute(0, 3, 1, 2).contiguous()


def natural_patch(model: Classifier, pool_x: torch.Tensor, pool_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  k: int, gen: torch.Generator, *, target: int, control: bool = False,
                  shape: str = "square") -> AttackResult:
    """Paste natural k x k crops into ``x`` at random placements; success = predicted ``target``.

    ``control=False``: crops come from ``pool`` tiles of class ``target``; ``control=True``:
    from tiles of each victim's own class.
    """
    check_inputs(model, x, y)
    start = time.perf_counter()
    n = x.shape[0]
    crops = torch.empty(n, x.shape[1], k, k, device=x.device)
    sources = y if control else torch.full_like(y, target)
    for cls in torch.unique(sources).tolist():  # loop over classes, not images
        sel = sources == cls
        pool = pool_x[pool_y == cls]
        if pool.shape[0] == 0:
            raise ValueError(f"no training tiles of class {cls} to cut natural patches from")
        crops[sel] = random_crops(pool, int(sel.sum()), k, gen)
    where = sample_placements(n, x.shape[2], x.shape[3], k, gen)
    x_adv, mask = paste(x, crops, patch_mask(k, shape, x.device), where)
    name = "natural-patch-control" if control else "natural-patch"
    return AttackResult.measure(name, {"side": k, "target": target, "control": control, "shape": shape}, model,
                                x, x_adv, y, target=target, wall_s=time.perf_counter() - start,
                                extras={"mask": mask, "crops": crops})
