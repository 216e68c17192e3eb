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


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N, 3, H, W) -> CIELAB (N, 3, H, W), D65 white."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    t = xyz / white
    f = torch.where(t > (6 / 29) ** 3, t.clamp_min(1e-12) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """Per-pixel CIEDE2000 difference of two Lab tensors (..., 3 on dim 1), kL = kC = kH = 1."""
    l1, a1, b1 = lab1.unbind(1)
    l2, a2, b2 = lab2.unbind(1)
    c1, c2 = torch.hypot(a1, b1), torch.hypot(a2, b2)
    cbar7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(cbar7 / (cbar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.atan2(b1, a1p) % (2 * math.pi)
    h2p = torch.atan2(b2, a2p) % (2 * math.pi)
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, torch.where(dh < -math.pi, dh + 2 * math.pi, dh))
    dh = torch.where(c1p * c2p == 0, torch.zeros_like(dh), dh)
    dhp = 2 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2)
    lbar, cbarp = (l1 + l2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    hbar = torch.where(torch.abs(h1p - h2p) > math.pi,
                       torch.where(hsum < 2 * math.pi, (hsum + 2 * math.pi) / 2, (hsum - 2 * math.pi) / 2), hsum / 2)
    hbar = torch.where(c1p * c2p == 0, hsum, hbar)
    t = (1 - 0.17 * torch.cos(hbar - math.radians(30)) + 0.24 * torch.cos(2 * hbar)
         + 0.32 * torch.cos(3 * hbar + math.radians(6)) - 0.20 * torch.cos(4 * hbar - math.radians(63)))
    dtheta = math.radians(30) * torch.exp(-(((torch.rad2deg(hbar) - 275) / 25) ** 2))
    cbarp7 = cbarp**7
    rc = 2 * torch.sqrt(cbarp7 / (cbarp7 + 25.0**7))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / torch.sqrt(20 + (lbar - 50) ** 2)
    sc = 1 + 0.045 * cbarp
    sh = 1 + 0.015 * cbarp * t
    rt = -torch.sin(2 * dtheta) * rc
    return torch.sqrt((dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2 + rt * (dcp / sc) * (dhp / sh))


def mean_ciede2000(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """(N,) mean CIEDE2000 over pixels; NaN for grayscale images (not defined there)."""
    if x.shape[1] != 3:
        return torch.full((x.shape[0],), math.nan)
    return ciede2000(rgb_to_lab(x.double()), rgb_to_lab(x_adv.double())).flatten(1).mean(1).float()


def perceptibility(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"psnr": psnr(x, x_adv), "ssim": ssim(x, x_adv), "ciede2000": mean_ciede2000(x, x_adv)}
