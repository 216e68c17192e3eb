"""How visible a perturbation is: PSNR, SSIM and the mean CIEDE2000 colour difference.

All per image, on (N, C, H, W) tensors in [0, 1]. CIEDE2000 (Sharma, Wu & Dalal, Color
Research & Application 30(1), 2005) is computed in CIELAB from sRGB under D65; a mean
difference below about 1 is invisible to most observers, around 2-3 is perceptible on close
inspection. It is defined for RGB images only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medfool.utils.colour import ciede2000, rgb_to_lab

__all__ = ["mean_ciede2000", "perceptibility", "psnr", "ssim"]


def psnr(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """(N,) peak signal-to-noise ratio in dB (inf for identical images)."""
    mse = (x - x_adv).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-20)).masked_fill(mse == 0, math.inf)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, x_adv: torch.Tensor, *, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """(N,) structural similarity (Wang et al. 2004), Gaussian window, averaged over channels.

    A 7-pixel window (not the usual 11) because medical tiles here are as small as 28 px.
    """
    c = x.shape[1]
    w = _gaussian_window(min(window, x.shape[-1], x.shape[-2]), sigma, c, x.device)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(x_adv)
    sxx = blur(x * x) - mu_x**2
    syy = blur(x_adv * x_adv) - mu_y**2
    sxy = blur(x * x_adv) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def mean_ciede2000(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """(N,) mean CIEDE2000 over pixels; NaN for grayscale images (not defined there)."""
    if x.shape[1] != 3:
        return torch.full((x.shape[0],), math.nan)
    return ciede2000(rgb_to_lab(x.double()), rgb_to_lab(x_adv.double())).flatten(1).mean(1).float()


def perceptibility(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"psnr": psnr(x, x_adv), "ssim": ssim(x, x_adv), "ciede2000": mean_ciede2000(x, x_adv)}
