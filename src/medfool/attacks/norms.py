"""Norms, projections and steepest-ascent directions shared by every norm-bounded attack.

All functions work per sample on (N, C, H, W) tensors and never modify their inputs.
"""

from __future__ import annotations

import torch

from medfool.utils.rng import Draw
from medfool.vocab import NORMS, Norm

__all__ = ["NORMS", "ascent_direction", "clip_box", "l0", "l2", "linf", "norm_of", "project", "random_in_ball"]


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape([-1] + [1] * (like.dim() - 1))


def l2(delta: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = torch.linalg.vector_norm(delta.flatten(1), dim=1)
    return out


def linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().max(dim=1).values


def l0(delta: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    """Changed *pixels* (spatial locations where any channel differs), the unit of pixel attacks."""
    return (delta.abs() > tol).any(dim=1).flatten(1).sum(dim=1)


def norm_of(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    return linf(delta) if norm == "linf" else l2(delta)


def project(delta: torch.Tensor, norm: Norm, eps: float | torch.Tensor) -> torch.Tensor:
    """Nearest point of the eps-ball (per-sample eps allowed)."""
    if norm == "linf" and not isinstance(eps, torch.Tensor):
        return delta.clamp(-eps, eps)  # one kernel: the hot path of PGD
    eps_t = eps if isinstance(eps, torch.Tensor) else torch.full((delta.shape[0],), float(eps), device=delta.device)
    if norm == "linf":
        e = _view(eps_t, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    n = l2(delta)
    factor = torch.where(n > eps_t, eps_t / n.clamp_min(1e-12), torch.ones_like(n))
    return delta * _view(factor, delta)


def clip_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Shrink delta so that x + delta stays in [0, 1]."""
    return (x + delta).clamp(0.0, 1.0) - x


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest ascent of unit norm: sign(g) for Linf, g / ||g|| for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _view(l2(grad).clamp_min(1e-12), grad)


def random_in_ball(like: torch.Tensor, norm: Norm, eps: float, draw: Draw) -> torch.Tensor:
    """Uniform in the Linf box, or uniform in the L2 ball (direction ~ Gaussian, radius ~ U^(1/d))."""
    if norm == "linf":
        return (2 * draw.rand(*like.shape) - 1) * eps
    g = draw.randn(*like.shape)
    d = like[0].numel()
    r = draw.rand(like.shape[0]) ** (1.0 / d)
    return g / _view(l2(g).clamp_min(1e-12), g) * _view(r * eps, g)
