"""Few-pixel candidates: k pixels, each a location and a colour, written into image copies.

A candidate is a flat vector of k * (2 + C) numbers: per pixel (row, col, c_1 .. c_C) with the
row and column continuous in [0, H) and [0, W) (floored when applied, so evolution can move
them smoothly) and colours in [0, 1]. ``write_pixels`` builds the perturbed images of many
candidates at once with one indexed assignment, no loop over candidates or pixels.
"""

from __future__ import annotations

import torch

from medfool.utils.colour import ciede2000, rgb_to_lab

__all__ = [
    "Conspicuity", "auto_batch", "candidate_logits", "candidate_size", "clip_candidates", "split_candidates",
    "write_pixels",
]


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


class Conspicuity:
    """How visible a written pixel is: CIEDE2000 between its colour and the mean colour of its
    3 x 3 neighbourhood (without itself) in the clean image, as a pathologist would see it
    against the surrounding tissue (after Korpihalkola et al.'s colour-optimised one-pixel attack, FRUCT 2021).
    Grayscale pixels are compared as grey RGB."""

    def __init__(self, x: torch.Tensor) -> None:
        rgb = x if x.shape[1] == 3 else x[:, :1].expand(-1, 3, -1, -1)
        padded = torch.nn.functional.pad(rgb, (1, 1, 1, 1), mode="replicate")
        nbr = (torch.nn.functional.avg_pool2d(padded, 3, stride=1) * 9 - rgb) / 8
        self.lab = rgb_to_lab(nbr.clamp(0, 1))     # (N, 3, H, W)

    def __call__(self, owner: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
        """(m,) mean CIEDE2000 over each candidate's k pixels; ``owner`` gives each one's image."""
        rows, cols, colours = split_candidates(cand, k)                      # (m, k), (m, k), (m, k, C)
        rgb = colours if colours.shape[-1] == 3 else colours[..., :1].expand(-1, -1, 3)
        new = rgb_to_lab(rgb.reshape(-1, 3, 1, 1))[:, :, 0, 0]                # (m*k, 3)
        img = owner.unsqueeze(1).expand(-1, k).reshape(-1)
        old = self.lab[img, :, rows.reshape(-1), cols.reshape(-1)]           # (m*k, 3)
        return ciede2000(new, old).view(-1, k).mean(dim=1)


def auto_batch(image_shape: tuple[int, ...]) -> int:
    """Candidates per model call when the user leaves it at 0: about 2^18 input values (1 MB),
    where two CPU cores measured their best forward throughput for the small CNN (bigger
    batches were up to 15 % slower; 111 for 3 x 28 x 28 tiles, 334 for 1 x 28 x 28)."""
    size = 1
    for s in image_shape:
        size *= int(s)
    return max(32, min(4096, (1 << 18) // size))


def candidate_logits(model: torch.nn.Module, x: torch.Tensor, owner: torch.Tensor, cand: torch.Tensor, k: int,
                     batch: int = 0) -> torch.Tensor:
    """Logits (m, K) of the images ``x[owner]`` with candidate i's pixels written into copy i,
    in model calls of ``batch`` candidates (0: ``auto_batch``); no gradients."""
    step = batch or auto_batch(tuple(x.shape[1:]))
    m = cand.shape[0]
    step = -(-m // -(-m // step)) if m else step  # equal chunks: no small tail call at a poor batch size
    with torch.no_grad():
        return torch.cat([model(write_pixels(x, owner[s:s + step], cand[s:s + step], k)) for s in range(0, m, step)])
