"""Where a patch goes and how it is pasted: batched, exact, and differentiable in the patch.

A patch is a (C, k, k) tile with a mask (a square, or the disc inscribed in it). A placement
gives each image a top-left corner and one of the 8 flips/quarter-turns (exact; histology has
no preferred orientation). Pasting writes ``mask * patch + (1 - mask) * image`` inside the
patch's box and leaves every other pixel bit-for-bit unchanged. Positions are drawn uniformly
among those allowed by a region constraint: anywhere, inside a box, or outside a box (so the
patch does not cover a region of interest such as a lesion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medfool.data.transforms import dihedral

__all__ = ["SHAPES", "Placement", "allowed_corners", "paste", "patch_mask", "patch_side", "sample_placements"]

SHAPES = ("square", "circle")


def patch_side(area_fraction: float, height: int, width: int) -> int:
    """Side k of the largest square patch covering at most ``area_fraction`` of the image."""
    if not 0.0 < area_fraction <= 1.0:
        raise ValueError(f"area fraction must be in (0, 1], got {area_fraction}")
    k = min(height, width, math.floor(math.sqrt(area_fraction * height * width)))
    if k < 1:
        raise ValueError(f"area {area_fraction:g} is less than one pixel of a {height}x{width} image")
    return k


def patch_mask(k: int, shape: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, k, k) float mask: ones for a square, the inscribed disc for a circle."""
    if shape == "square":
        return torch.ones(1, k, k, device=device)
    if shape == "circle":
        c = (k - 1) / 2
        yy, xx = torch.meshgrid(torch.arange(k, device=device), torch.arange(k, device=device), indexing="ij")
        return (((yy - c) ** 2 + (xx - c) ** 2) <= (k / 2) ** 2).float().unsqueeze(0)
    raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")


@dataclass(frozen=True)
class Placement:
    """Per image: top-left corner and dihedral transform index (0-7) of the pasted patch."""

    top: torch.Tensor   # (N,) int64
    left: torch.Tensor  # (N,) int64
    turn: torch.Tensor  # (N,) int64: quarter turns + 4 * flip


def allowed_corners(height: int, width: int, k: int, region: str = "anywhere",
                    box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(H-k+1, W-k+1) bool map of top-left corners a k x k patch may use.

    ``box`` is (top, left, bottom, right), exclusive at bottom/right. ``inside``: the patch lies
    within the box; ``outside``: the patch does not overlap it.
    """
    rows = torch.arange(height - k + 1)[:, None]
    cols = torch.arange(width - k + 1)[None, :]
    ok = torch.ones(height - k + 1, width - k + 1, dtype=torch.bool)
    if region == "anywhere":
        return ok
    if box is None:
        raise ValueError(f"region {region!r} needs a box (top, left, bottom, right)")
    t, lft, b, r = box
    if region == "inside":
        ok = (rows >= t) & (rows + k <= b) & (cols >= lft) & (cols + k <= r)
    elif region == "outside":
        ok = (rows + k <= t) | (rows >= b) | (cols + k <= lft) | (cols >= r)
    else:
        raise ValueError(f"region must be anywhere, inside or outside, got {region!r}")
    if not bool(ok.any()):
        raise ValueError(f"no position fits a {k}x{k} patch {region} the box {box} of a {height}x{width} image")
    return ok


def sample_placements(n: int, height: int, width: int, k: int, gen: torch.Generator, *, region: str = "anywhere",
                      box: tuple[int, int, int, int] | None = None, rotate: bool = True) -> Placement:
    ok = allowed_corners(height, width, k, region, box).flatten()
    flat = torch.multinomial(ok.float(), n, replacement=True, generator=gen)
    cols = width - k + 1
    turn = torch.randint(0, 8, (n,), generator=gen) if rotate else torch.zeros(n, dtype=torch.long)
    return Placement(top=flat // cols, left=flat % cols, turn=turn)


def paste(x: torch.Tensor, patch: torch.Tensor, mask: torch.Tensor,
          where: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``patch`` (C, k, k), or one patch per image (N, C, k, k), with ``mask`` (1, k, k)
    into every image of ``x`` (N, C, H, W).

    Returns the patched batch and the (N, 1, H, W) mask of pasted pixels. Differentiable with
    respect to ``patch``; ``x`` is not modified.
    """
    n = x.shape[0]
    k = patch.shape[-1]
    dev = x.device
    per_image = patch if patch.dim() == 4 else patch.unsqueeze(0).expand(n, -1, -1, -1)
    tiles = dihedral(per_image, where.turn.to(dev))                                     # (n, C, k, k)
    masks = dihedral(mask.unsqueeze(0).expand(n, -1, -1, -1), where.turn.to(dev))      # (n, 1, k, k)
    img = torch.arange(n, device=dev).view(n, 1, 1)
    rows = where.top.to(dev).view(n, 1, 1) + torch.arange(k, device=dev).view(1, k, 1)  # (n, k, 1)
    cols = where.left.to(dev).view(n, 1, 1) + torch.arange(k, device=dev).view(1, 1, k)  # (n, 1, k)
    region = x[img, :, rows, cols]                                                       # (n, k, k, C)
    blended = masks.permute(0, 2, 3, 1) * tiles.permute(0, 2, 3, 1) + (1 - masks.permute(0, 2, 3, 1)) * region
    out = x.clone()
    out[img, :, rows, cols] = blended
    full_mask = torch.zeros(n, 1, *x.shape[2:], device=dev)
    full_mask[img, :, rows, cols] = masks.permute(0, 2, 3, 1)
    return out, full_mask
