"""The H&E stain model shared by stain jitter (EOT, training augmentation) and the stain attack.

Colour deconvolution (Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 23(4), 2001): by
Beer-Lambert, optical density OD = -log(I / I0) is linear in the stain concentrations, with
one unit OD vector per stain (haematoxylin, eosin, and a residual DAB channel). All functions
are differentiable and work on (N, 3, H, W) RGB tensors in [0, 1].
"""

from __future__ import annotations

import torch

from medfool.utils.rng import Draw

__all__ = ["HED_FROM_RGB", "RGB_FROM_HED", "hed_jitter", "hed_to_od", "mix_channels", "od_to_hed", "od_to_rgb",
           "rgb_to_od"]

# rows: OD colour of haematoxylin, eosin, DAB (Ruifrok & Johnston's H&E-DAB vectors)
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_MIN = 1e-6


def rgb_to_od(rgb: torch.Tensor) -> torch.Tensor:
    return -torch.log(rgb.clamp_min(_MIN))


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    return torch.exp(-od)


def od_to_hed(od: torch.Tensor, hed_from_rgb: torch.Tensor | None = None) -> torch.Tensor:
    """Concentrations (N, 3, H, W) from optical density; per-image matrices allowed (N, 3, 3)."""
    m = (HED_FROM_RGB if hed_from_rgb is None else hed_from_rgb).to(od)
    return mix_channels(od, m)


def hed_to_od(hed: torch.Tensor, rgb_from_hed: torch.Tensor | None = None) -> torch.Tensor:
    m = (RGB_FROM_HED if rgb_from_hed is None else rgb_from_hed).to(hed)
    return mix_channels(hed, m)


def mix_channels(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """out[:, d] = sum_c v[:, c] * m[c, d] (m (3, 3) or per image (N, 3, 3)), written as a
    broadcast sum rather than an einsum: einsum becomes a GEMM over N*H*W rows whose kernel,
    and so the last bits of every pixel, changes with the batch size."""
    w = m.unsqueeze(0) if m.dim() == 2 else m
    return (v.unsqueeze(2) * w[:, :, :, None, None]).sum(1)


def hed_jitter(x: torch.Tensor, draw: Draw, sigma: float = 0.05) -> torch.Tensor:
    """Tellez et al. (Medical Image Analysis 58, 2019): per image and stain, scale the
    concentration by U(1-sigma, 1+sigma) and shift it by U(-sigma, sigma). RGB only."""
    if x.shape[1] != 3:
        return x
    n = x.shape[0]
    a = (1 + sigma * (2 * draw.rand(n, 3) - 1)).to(x)
    b = (sigma * (2 * draw.rand(n, 3) - 1)).to(x)
    # OD -> HED, scale and shift, -> OD folded into one per-image affine map of the OD (cheaper
    # than two colour transforms in an optimisation loop)
    m1, m2 = HED_FROM_RGB.to(x), RGB_FROM_HED.to(x)
    # broadcast sums, not einsum/matmul: a GEMM's last bits change with the batch size
    mat = (m1[None, :, :, None] * a[:, None, :, None] * m2[None, None]).sum(2)   # (n, 3, 3)
    bias = (b[:, :, None] * m2[None]).sum(1)                                       # (n, 3)
    od = mix_channels(rgb_to_od(x), mat) + bias[:, :, None, None]
    return od_to_rgb(od).clamp(0, 1)
