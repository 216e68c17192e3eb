"""The few batch transforms training needs, written for tensors (no torchvision).

Every function takes an explicit ``torch.Generator`` so augmentation is reproducible.
"""

from __future__ import annotations

import torch

from medfool.utils.hed import hed_jitter
from medfool.utils.rng import GeneratorDraw

__all__ = ["AUGMENT_PARTS", "augment", "check_augment", "dihedral", "random_dihedral", "random_hflip", "random_shift"]

# an augmentation is "none" or these parts joined by "+", applied in the order written
AUGMENT_PARTS = ("flip", "dihedral", "shift", "stain")


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


def random_shift(x: torch.Tensor, gen: torch.Generator, fraction: float = 0.125) -> torch.Tensor:
    """Move each image by up to ``fraction`` of its size in each direction, the uncovered border
    filled by reflection: new framing without new orientation, so it suits X-rays as well as
    tiles. It gives a large network trained from scratch views it has not memorised (LC25000's
    training split already holds the flips and rotations of each original). Shape kept."""
    n, _, h, w = x.shape
    ph, pw = max(1, int(h * fraction)), max(1, int(w * fraction))
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph), mode="reflect")
    dy = torch.randint(0, 2 * ph + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pw + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    picked = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols]
    return picked.permute(0, 3, 1, 2).contiguous()


def check_augment(kind: str) -> str:
    """``kind`` if it is "none" or known parts joined by "+" (e.g. "dihedral+shift+stain"), else
    a ValueError that names the parts."""
    parts = kind.split("+")
    if kind != "none" and (not all(parts) or any(p not in AUGMENT_PARTS for p in parts)):
        raise ValueError(f"augment must be none or parts joined by '+' from {', '.join(AUGMENT_PARTS)}, "
                         f"got {kind!r}")
    return kind


def augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Apply the parts of ``kind`` in order: flip (left-right), dihedral (the 8 flips and
    quarter turns; a flip for non-square images), shift (:func:`random_shift`), stain (H&E stain
    jitter after Tellez et al., RGB only)."""
    for part in check_augment(kind).split("+"):
        if part == "flip":
            x = random_hflip(x, gen)
        elif part == "dihedral":
            x = random_dihedral(x, gen) if x.shape[-1] == x.shape[-2] else random_hflip(x, gen)
        elif part == "shift":
            x = random_shift(x, gen)
        elif part == "stain":
            x = hed_jitter(x, GeneratorDraw(gen, x.device))
    return x
