"""Image operations shared by model layers (input-transform defences) and attacks (EOT):
block-DCT JPEG quantisation and per-image keys for randomness that must not depend on the
batch. Tensors are (N, C, H, W) in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["JPEG_LUMA", "content_keys", "dct_matrix", "jpeg_quantise", "mix_keys", "quality_table", "straight_through"]

# JPEG's standard luminance quantisation table (ITU-T T.81, Annex K)
JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float64)


def dct_matrix(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal DCT-II matrix."""
    k = torch.arange(size, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * size)) * math.sqrt(2 / size)
    m[0] /= math.sqrt(2)
    return m.to(device=device, dtype=dtype)


def quality_table(quality: torch.Tensor) -> torch.Tensor:
    """(n, 8, 8) quantisation tables in [0, 1] pixel units for JPEG qualities (n,) in 1..100 (IJG scaling)."""
    q = quality.double().cpu()
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    return ((JPEG_LUMA * scale.view(-1, 1, 1) + 50) / 100).floor().clamp_min(1) / 255.0


def straight_through(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` forward, the identity's gradient backward (BPDA with g(x) = x, Athalye et al. 2018)."""
    return x + (y - x).detach()


def jpeg_quantise(x: torch.Tensor, quality: torch.Tensor, *, bpda: bool) -> torch.Tensor:
    """8x8 block DCT of every channel, quantised with the luminance table at ``quality`` (one
    per image), inverse DCT. ``bpda``: rounding passes gradients straight through; otherwise
    torch's rounding (zero gradient almost everywhere, as a deployed JPEG step gives)."""
    n, c, h, w = x.shape
    table = quality_table(quality).to(x).view(n, 1, 1, 1, 8, 8)
    ph, pw = (-h) % 8, (-w) % 8
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hh, ww = xp.shape[-2:]
    blocks = xp.view(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (n, c, bh, bw, 8, 8)
    d = dct_matrix(8, x.device, x.dtype)
    scaled = _mm(_mm(d, blocks - 0.5), d.T) / table
    rounded = straight_through(scaled, torch.round(scaled)) if bpda else torch.round(scaled)
    out = _mm(_mm(d.T, rounded * table), d) + 0.5
    return out.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)[..., :h, :w].clamp(0, 1)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b over the last two dimensions as a broadcast sum: a batched GEMM's kernel, and so the
    last bits (here: which side of a rounding step a coefficient lands), change with how many
    blocks the batch holds."""
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def content_keys(x: torch.Tensor) -> torch.Tensor:
    """(N,) int64 keys that depend on each image's pixels only (quantised to 1/255 and hashed):
    randomness drawn from them is the same for an image whatever batch it is in."""
    q = (x.detach().flatten(1).clamp(0, 1) * 255).round().long()
    weights = torch.arange(1, q.shape[1] + 1, device=x.device, dtype=torch.int64) * 2654435761 % 4294967291
    return (q * weights).sum(dim=1) % 2147483647


def mix_keys(keys: torch.Tensor, salt: int) -> torch.Tensor:
    """(N,) keys in [0, 2**31 - 1) for draw number ``salt`` of each image: a fresh EOT draw that
    still depends on the image alone (two rounds of multiply-add modulo a prime, which stay
    inside int64)."""
    p = 2147483647
    out = (keys * 1_103_515_245 + (salt % p) * 1_597_334_677 + 12_345) % p
    return (out * 69_069 + 1) % p
