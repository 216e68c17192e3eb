"""STRIP (Gao et al. 2019): screen inputs by how little their prediction moves under overlays.

Gao, Xu, Wang, Chen, Ranasinghe & Nepal, "STRIP: A Defence Against Trojan Attacks on Deep
Neural Networks", ACSAC 2019.

Blend an input with ``n`` random clean images: a clean input's prediction scatters (high
mean entropy), a triggered input keeps answering the target because the trigger survives
the blend (low entropy). The threshold is the ``frr`` quantile of clean held-out inputs'
entropies, so at most that share of clean inputs is rejected on data like the held-out set.
All ``b x n`` blends of a batch go through the model in one forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medfool.data.dataset import Split
from medfool.defences.backdoor.flags import SampleFlags
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.vocab import MULTI_LABEL

__all__ = ["Strip", "fit_strip", "strip_entropy", "strip_training_flags"]


@dataclass(frozen=True)
class Strip:
    """A fitted STRIP screen: the overlay images and the entropy threshold."""

    overlays: torch.Tensor  # (M, C, H, W) clean images to blend with
    threshold: float
    n: int = 16
    alpha: float = 0.5
    frr: float = 0.05

    def entropy(self, model: Classifier, x: torch.Tensor, gen: torch.Generator, *,
                batch_size: int = 128) -> torch.Tensor:
        """Mean prediction entropy over ``n`` overlays per input. Shape: (N, C, H, W) -> (N,)."""
        return strip_entropy(model, x, self.overlays, gen, n=self.n, alpha=self.alpha, batch_size=batch_size)

    def flags(self, model: Classifier, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(N,) bool: inputs whose entropy falls below the threshold (suspected triggered)."""
        return self.entropy(model, x, gen) < self.threshold


def strip_entropy(model: Classifier, x: torch.Tensor, overlays: torch.Tensor, gen: torch.Generator, *,
                  n: int = 16, alpha: float = 0.5, batch_size: int = 128) -> torch.Tensor:
    """Shape: x (N, C, H, W), overlays (M, C, H, W) -> (N,) mean entropy (nats) of the blends."""
    out = []
    device = model.device
    model.eval()
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            b = xb.shape[0]
            pick = torch.randint(overlays.shape[0], (b * n,), generator=gen)
            blends = (1 - alpha) * xb.repeat_interleave(n, 0) + alpha * overlays[pick].to(device)  # (b*n, C, H, W)
            p = model.probabilities(blends)
            if model.task == MULTI_LABEL:  # independent labels: sum of per-label binary entropies
                h = -(p * p.clamp_min(1e-12).log() + (1 - p) * (1 - p).clamp_min(1e-12).log()).sum(1)
            else:
                h = -(p * p.clamp_min(1e-12).log()).sum(1)
            out.append(h.view(b, n).mean(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def fit_strip(model: Classifier, holdout: Split, *, n: int = 16, alpha: float = 0.5, frr: float = 0.05,
              seed: int = 0, max_images: int = 1000) -> Strip:
    """Draw overlays and the threshold from a clean held-out split (e.g. validation): half of
    its images (up to ``max_images``) are overlays, the other half set the threshold."""
    if not 0 < frr < 1:
        raise ConfigError(f"STRIP false-rejection rate must be in (0, 1), got {frr}")
    if not 0 < alpha < 1:
        raise ConfigError(f"STRIP blend alpha must be in (0, 1), got {alpha}")
    idx = holdout.sample_index(max_images, seed)
    if idx.size < 4:
        raise ConfigError(f"STRIP needs at least 4 clean held-out images, got {idx.size}")
    x, _ = holdout.get(idx)
    overlays, calib = x[0::2], x[1::2]
    gen = torch.Generator().manual_seed(seed)
    h = strip_entropy(model, calib, overlays, gen, n=n, alpha=alpha)
    threshold = float(torch.quantile(h.double(), frr))
    return Strip(overlays, threshold, n, alpha, frr)


def strip_training_flags(model: Classifier, train: Split, screen: Strip, *, seed: int = 0,
                         batch_size: int = 512) -> SampleFlags:
    """STRIP over a training set: poisons carry the trigger, so they are low-entropy inputs too."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, len(train), batch_size):
        x, _ = train.get(np.arange(start, min(len(train), start + batch_size)))
        parts.append(screen.entropy(model, x, gen))
    h = torch.cat(parts).numpy()
    return SampleFlags("strip", -h, h < screen.threshold,
                       {"threshold": screen.threshold, "frr": screen.frr, "n": screen.n, "alpha": screen.alpha})
