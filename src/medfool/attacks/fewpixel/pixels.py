"""Few-pixel candidates: k pixels, each a location and a colour, written into image copies.

A candidate is a flat vector of k * (2 + C) numbers: per pixel (row, col, c_1 .. c_C) with the
row and column continuous in [0, H) and [0, W) (floored when applied, so evolution can move
them smoothly) and colours in [0, 1]. ``write_pixels`` builds the perturbed images of many
candidates at once with one indexed assignment, no loop over candidates or pixels.
"""

from __future__ import annotations

import torch


def candidate_size(k: int, channels: int) -> int:
    return k * (2 + channels)


def clip_candidates(cand: torch.Tensor, k: int, height: int, width: int) -> torch.Tensor:
    """Rows into [0, H), columns into [0, W), colours into [0, 1]; ``cand`` is (..., k*(2+C))."""
    per = cand.reshape(*cand.shape[:-1], k, -1)
    rows = per[..., :1].clamp(0, height - 1e-3)
    cols = per[..., 1:2].clamp(0, width - 1e-3)
    return torch.cat([rows, cols, per[..., 2:].clamp(0, 1)], dim=-1).reshape(cand.shape)


def split_candidates(cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(m, k*(2+C)) -> integer rows (m, k), columns (m, k) and colours (m, k, C)."""
    per = cand.view(cand.shape[0], k, -1)
    return per[..., 0].floor().long(), per[..., 1].floor().long(), per[..., 2:]


def write_pixels(x: torch.Tensor, image_index: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
    """Copies of ``x[image_index]`` (m, C, H, W) with candidate i's k pixels written into copy i."""
    out = x[image_index].clone()
    rows, cols, colours = split_candidates(cand, k)
    m = cand.shape[0]
    which = torch.arange(m, device=x.device).unsqueeze(1).expand(m, k)
    out[which, :, rows, cols] = colours.to(out.dtype)  # (m, k, C) into (m, k) locations
    return out
