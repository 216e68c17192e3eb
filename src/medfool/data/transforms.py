"""The few batch transforms training needs, written for tensors (no torchvision).

Every function takes an explicit ``torch.Generator`` so augmentation is reproducible.
"""

from __future__ import annotations

import torch

__all__ = ["AUGMENTS", "augment", "dihedral", "random_dihedral", "random_hflip"]

AUGMENTS = ("none", "flip", "dihedral")


def dihedral(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Apply one of the 8 flips/quarter turns per image: ``turn`` (N,) = quarter turns + 4 * flip.
    The flip comes first, then the rotation. Shape: (N, C, H, W) -> same (H must equal W)."""
    turn = turn.to(x.device)
    out = torch.where((turn >= 4).view(-1, 1, 1, 1), x.flip(-1), x)
    rotated = out.clone()
    quarter = turn % 4
    for r in (1, 2, 3):  # loop over the 3 rotations, not over images
        sel = quarter == r
        if bool(sel.any()):
            rotated[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
    return rotated


def random_dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image gets one of the 8 flips/90-degree rotations: orientation means nothing in
    a histology tile. Shape: (N, C, H, W) -> same (H must equal W)."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen)
    return dihedral(x, k + 4 * flip)


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.randint(0, 2, (x.shape[0],), generator=gen).bool().to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "none":
        return x
    if kind == "flip":
        return random_hflip(x, gen)
    if kind == "dihedral":
        return random_dihedral(x, gen) if x.shape[-1] == x.shape[-2] else random_hflip(x, gen)
    raise ValueError(f"augment must be one of {AUGMENTS}, got {kind!r}")
