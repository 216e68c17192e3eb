"""Natural variation: graded image corruptions of the kind a slide scanner or an X-ray chain
produces, so an adversarial figure can be read beside what ordinary variation already does.

The corruption sets and their five severities follow MedMNIST-C (Di Salvo, Doerrich & Ledig,
"MedMNIST-C: Comprehensive benchmark and improved classifier robustness by simulating realistic
image corruptions", 2024; its PathMNIST and PneumoniaMNIST settings), with H&E stain jitter
after Tellez et al. (Med. Image Anal. 58, 2019; HED-light 0.05 to HED-strong 0.2):

* histology (RGB): stain, brightness up / down, defocus blur, JPEG, Gaussian noise;
* X-ray (grayscale): contrast up / down, gamma up / down, Gaussian blur, JPEG, Gaussian noise.

Spatial parameters (blur radius and sigma) are MedMNIST-C's at 224 px scaled to the image's
size, so a severity is the same optical blur on a 28 px and a 224 px tile; intensity parameters
(noise sigma, brightness, contrast, gamma, JPEG quality, stain) apply per pixel as given. Random
corruptions (noise, stain) draw from each image's own stream (:class:`ImageStreams`), so an
image's corrupted version does not depend on the batch it is in.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medfool.attacks.transforms import gaussian_noise, hed_jitter
from medfool.utils.rng import Draw

__all__ = [
    "HISTOLOGY", "REFERENCE_SIZE", "SEVERITIES", "XRAY", "Corruption", "blur", "brightness", "contrast",
    "corrupt", "corruptions_for", "defocus", "disk_kernel", "gamma", "gaussian_kernel", "jpeg", "known_names",
    "noise", "stain",
]

REFERENCE_SIZE = 224  # MedMNIST-C's spatial parameters are for 224 px images


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``apply(x, level, draw)`` maps (N, C, H, W) in [0, 1] to the same shape."""

    name: str
    description: str
    levels: tuple[float, ...]  # severities 1..5
    apply: Callable[[torch.Tensor, float, Draw], torch.Tensor]


def brightness(x: torch.Tensor, factor: float, _draw: Draw) -> torch.Tensor:
    """PIL's ImageEnhance.Brightness: a blend with black."""
    return (x * factor).clamp(0, 1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def contrast(x: torch.Tensor, factor: float, _draw: Draw) -> torch.Tensor:
    """PIL's ImageEnhance.Contrast: a blend with the image's mean grey level."""
    mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor * (x - mean)).clamp(0, 1)


def gamma(x: torch.Tensor, g: float, _draw: Draw) -> torch.Tensor:
    return x.clamp(0, 1) ** g


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D filtering with mirrored borders (OpenCV's default border)."""
    c, k = x.shape[1], kernel.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(xp, kernel.to(x).expand(c, 1, k, k), groups=c)


def disk_kernel(radius: float, oversample: int = 8) -> torch.Tensor:
    """The discrete kernel of a defocus disk of ``radius`` pixels on a pixel grid: the disk
    convolved with the pixel's footprint twice (the source and the sensor pixel), i.e. the disk's
    mean over offsets with a triangular density on [-1, 1]^2. Unlike rounding the disk to
    pixels, a radius under one pixel still spreads a little light to the neighbours."""
    half = max(1, math.ceil(radius + 1))
    t = (torch.arange(2 * oversample, dtype=torch.float64) + 0.5) / oversample - 1  # in (-1, 1)
    tri = 1 - t.abs()
    wy, wx = torch.meshgrid(t, t, indexing="ij")
    weight = torch.outer(tri, tri)
    d = torch.arange(-half, half + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    inside = ((dx[..., None, None] + wx) ** 2 + (dy[..., None, None] + wy) ** 2) <= radius**2
    k = (inside.double() * weight).sum(dim=(-2, -1))
    k[half, half] = max(float(k[half, half]), 1e-12)  # radius 0: the identity
    return (k / k.sum()).float()


def gaussian_kernel(sigma: float) -> torch.Tensor:
    half = max(1, math.ceil(3 * sigma))
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


def _scale(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / REFERENCE_SIZE


def defocus(x: torch.Tensor, radius: float, _draw: Draw) -> torch.Tensor:
    """Defocus blur: a disk kernel (MedMNIST-C's radius at 224 px, scaled to the image)."""
    return _filter(x, disk_kernel(radius * _scale(x))).clamp(0, 1)


def blur(x: torch.Tensor, kernel_size: float, _draw: Draw) -> torch.Tensor:
    """Gaussian blur with the sigma torchvision derives from MedMNIST-C's kernel size at 224 px,
    scaled to the image."""
    sigma = (0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8) * _scale(x)
    return _filter(x, gaussian_kernel(max(sigma, 1e-3))).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: float, _draw: Draw) -> torch.Tensor:
    """A JPEG round trip at ``quality`` (libjpeg through Pillow; 4:2:0 chroma for RGB)."""
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):  # one encoder call per image: there is no batched libjpeg
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = back[..., None] if back.ndim == 2 else back
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255


def noise(x: torch.Tensor, sigma: float, draw: Draw) -> torch.Tensor:
    return gaussian_noise(x, draw, sigma)


def stain(x: torch.Tensor, sigma: float, draw: Draw) -> torch.Tensor:
    """H&E stain jitter (Tellez et al.): each stain concentration scaled by U(1-s, 1+s) and
    shifted by U(-s, s), per image and stain, in colour-deconvolution space (EOT's transform)."""
    return hed_jitter(x, draw, sigma)


HISTOLOGY: tuple[Corruption, ...] = (
    Corruption("stain", "H&E stain jitter (HED scale and shift)", (0.025, 0.05, 0.1, 0.15, 0.2), stain),
    Corruption("brightness-up", "brighter scan", (1.1, 1.15, 1.2, 1.22, 1.25), brightness),
    Corruption("brightness-down", "darker scan", (0.85, 0.8, 0.75, 0.72, 0.7), brightness),
    Corruption("defocus", "out-of-focus scan (disk blur, radius at 224 px)", (3, 4, 5, 6, 7), defocus),
    Corruption("jpeg", "JPEG compression (quality)", (50, 30, 15, 10, 7), jpeg),
    Corruption("noise", "sensor noise (Gaussian sigma)", (0.04, 0.08, 0.12, 0.18, 0.26), noise),
)
XRAY: tuple[Corruption, ...] = (
    Corruption("contrast-up", "higher contrast", (1.1, 1.2, 1.3, 1.4, 1.6), contrast),
    Corruption("contrast-down", "lower contrast", (0.9, 0.8, 0.7, 0.6, 0.4), contrast),
    Corruption("gamma-up", "gamma > 1 (darker mid-tones)", (1.1, 1.2, 1.3, 1.4, 1.6), gamma),
    Corruption("gamma-down", "gamma < 1 (brighter mid-tones)", (0.9, 0.8, 0.7, 0.6, 0.4), gamma),
    Corruption("blur", "Gaussian blur (kernel size at 224 px)", (3, 5, 7, 9, 11), blur),
    Corruption("jpeg", "JPEG compression (quality)", (50, 30, 15, 10, 7), jpeg),
    Corruption("noise", "detector noise (Gaussian sigma)", (0.04, 0.05, 0.06, 0.07, 0.08), noise),
)
SEVERITIES = (1, 2, 3, 4, 5)


def corruptions_for(channels: int) -> tuple[Corruption, ...]:
    """The modality's set: histology for RGB images, X-ray for grayscale ones."""
    return HISTOLOGY if channels == 3 else XRAY


def known_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.name for c in HISTOLOGY + XRAY))


def corrupt(x: torch.Tensor, corruption: Corruption, severity: int, draw: Draw) -> torch.Tensor:
    """``x`` under ``corruption`` at ``severity`` (1..5)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of 1..5, got {severity}")
    if corruption.name == "stain" and x.shape[1] != 3:
        raise ValueError("stain jitter needs RGB images")
    return corruption.apply(x, corruption.levels[severity - 1], draw)
