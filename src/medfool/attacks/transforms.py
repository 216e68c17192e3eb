"""Differentiable random transforms for expectation over transformation (EOT).

Each transform takes a batch (N, C, H, W) in [0, 1] and a :class:`~medfool.utils.rng.Draw`
(one row of random numbers per image: per-image streams in attacks, a generator when crafting
a universal patch) and returns a transformed batch, differentiable with respect to the input
(JPEG rounding uses a straight-through estimator). :class:`TransformSet` draws one random
composition per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from medfool.data.transforms import dihedral
from medfool.utils.hed import hed_jitter
from medfool.utils.imageops import jpeg_quantise
from medfool.utils.rng import Draw

__all__ = [
    "TRANSFORMS", "Transform", "TransformSet", "gaussian_blur", "gaussian_noise", "hed_jitter", "jpeg_like",
    "random_dihedral",
]

Transform = Callable[[torch.Tensor, Draw], torch.Tensor]


def random_dihedral(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    """One of the 8 flips / 90-degree rotations per image."""
    return dihedral(x, draw.randint(0, 8, x.shape[0]).cpu())


def gaussian_blur(x: torch.Tensor, draw: Draw, max_sigma: float = 1.0, size: int = 5) -> torch.Tensor:
    """Per-image Gaussian blur with sigma ~ U(0.1, max_sigma) (a slightly defocused scanner)."""
    n, c, h, w = x.shape
    sig = (0.1 + (max_sigma - 0.1) * draw.rand(n)).to(x)
    ax = torch.arange(size, device=x.device, dtype=x.dtype) - (size - 1) / 2
    k1 = torch.exp(-(ax[None, :] ** 2) / (2 * sig[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)                                    # (n, size)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None]  # (n*c, 1, size, size)
    padded = F.pad(x.reshape(1, n * c, h, w), (size // 2,) * 4, mode="reflect")
    return F.conv2d(padded, k2, groups=n * c).view(n, c, h, w)


def gaussian_noise(x: torch.Tensor, draw: Draw, sigma: float = 0.02) -> torch.Tensor:
    return (x + sigma * draw.randn(*x.shape).to(x)).clamp(0, 1)


def jpeg_like(x: torch.Tensor, draw: Draw, quality: tuple[int, int] = (50, 95)) -> torch.Tensor:
    """8x8 block DCT, quantisation with the JPEG luminance table at a random quality per image,
    inverse DCT. Rounding passes gradients straight through (BPDA, Athalye et al. 2018)."""
    q = draw.randint(quality[0], quality[1] + 1, x.shape[0]).cpu()
    return jpeg_quantise(x, q, bpda=True)


TRANSFORMS: dict[str, Transform] = {
    "dihedral": random_dihedral, "hed": hed_jitter, "blur": gaussian_blur, "noise": gaussian_noise,
    "jpeg": jpeg_like,
}


class TransformSet:
    """A random composition of the named transforms, each applied with probability ``p``."""

    def __init__(self, names: Sequence[str], p: float = 0.5) -> None:
        unknown = [t for t in names if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"transforms must be among {', '.join(TRANSFORMS)}, got {', '.join(unknown)}")
        self.names = tuple(names)
        self.p = p

    def __call__(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        for name in self.names:
            chosen = (draw.rand(x.shape[0]) < self.p).to(x.device)
            # applied to every image even where none chose it: an image's draws must not depend
            # on what the other images of its batch chose
            moved = TRANSFORMS[name](x, draw)
            x = torch.where(chosen.view(-1, 1, 1, 1), moved, x)
        return x
