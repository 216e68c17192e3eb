"""Where the tissue is: CLAM's segmentation (Lu et al., "Data-efficient and weakly supervised
computational pathology on whole-slide images", Nature Biomedical Engineering 2021), on a low
level of the slide.

The HSV saturation (OpenCV's 0-255 scale) is median-filtered with a ``mthresh`` x ``mthresh``
window, thresholded by Otsu's method (or at ``sthresh`` with ``otsu=False``, CLAM's default), and
closed morphologically with a ``close`` x ``close`` square. Glass is grey or white (low
saturation); stained tissue is not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["otsu_threshold", "saturation", "tissue_mask"]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of (H, W, 3) uint8 RGB, 0-255 as OpenCV computes it."""
    x = rgb.astype(np.float32)
    hi, lo = x.max(axis=2), x.min(axis=2)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6) * 255.0, 0.0).astype(np.float32)


def otsu_threshold(values: np.ndarray) -> float:
    """The threshold on 0-255 values that maximises the between-class variance (Otsu 1979)."""
    hist = np.bincount(np.clip(values.round(), 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return float(np.argmax(between))


def _median(img: torch.Tensor, k: int) -> torch.Tensor:
    """k x k median filter of (H, W), edges replicated."""
    pad = k // 2
    x = F.pad(img[None, None], (pad, pad, pad, pad), mode="replicate")
    return F.unfold(x, k).median(dim=1).values.reshape(img.shape)  # (1, k*k, H*W) -> (H, W)


def _close(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Morphological closing (dilation, then erosion) of a (H, W) 0/1 mask by a k x k square."""
    if k <= 1:
        return mask
    lo, hi = (k - 1) // 2, k // 2
    x = F.pad(mask[None, None], (lo, hi, lo, hi), value=0.0)
    dilated = F.max_pool2d(x, k, stride=1)
    y = F.pad(dilated, (lo, hi, lo, hi), value=1.0)
    return (-F.max_pool2d(-y, k, stride=1))[0, 0]


def tissue_mask(rgb: np.ndarray, *, sthresh: float = 8, mthresh: int = 7, close: int = 4,
                otsu: bool = True) -> np.ndarray:
    """(H, W) bool: tissue in an (H, W, 3) uint8 RGB image (a low level of the slide)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    sat = torch.from_numpy(saturation(rgb))
    med = _median(sat, mthresh | 1)  # an odd window, as OpenCV's medianBlur needs
    thresh = otsu_threshold(med.numpy()) if otsu else sthresh
    mask = (med > thresh).float()
    return _close(mask, close).numpy() > 0.5
